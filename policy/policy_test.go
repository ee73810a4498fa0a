package policy

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// mustParse parses src or fails the test.
func mustParse(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestAllowDefaultDeny(t *testing.T) {
	p := mustParse(t, `
rules:
  - identities: ["token:a"]
    keys: ["k1"]
    allow: ["Encrypt"]
`)
	tests := []struct {
		name, id, rpc, key string
		want               bool
	}{
		{"granted", "token:a", "Encrypt", "k1", true},
		{"other identity", "token:b", "Encrypt", "k1", false},
		{"other key", "token:a", "Encrypt", "k2", false},
		{"other rpc", "token:a", "Decrypt", "k1", false},
		{"unknown rpc", "token:a", "Frobnicate", "k1", false},
		{"full procedure is not an rpc name", "token:a", "/sigil.v1.KeyManagementService/Encrypt", "k1", false},
		{"empty identity", "", "Encrypt", "k1", false},
		{"empty key", "token:a", "Encrypt", "", false},
		{"rpc names are case-sensitive", "token:a", "encrypt", "k1", false},
		{"no ListKeys without read", "token:a", "ListKeys", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Allow(tt.id, tt.rpc, tt.key); got != tt.want {
				t.Errorf("Allow(%q, %q, %q) = %v, want %v", tt.id, tt.rpc, tt.key, got, tt.want)
			}
		})
	}
}

func TestNilAndEmptyPolicyDeny(t *testing.T) {
	var nilPolicy *Policy
	empty := mustParse(t, "rules: []\n")
	for _, p := range []*Policy{nilPolicy, {}, empty} {
		for _, rpc := range RPCs() {
			if p.Allow("token:a", rpc, "k") || p.Allow("token:a", rpc, "") {
				t.Errorf("%v allowed %s", p, rpc)
			}
		}
		if err := p.CheckJWT("token:a", "k", map[string]any{"exp": 1.0}, testNow); !errors.Is(err, ErrDenied) {
			t.Errorf("CheckJWT = %v, want ErrDenied", err)
		}
	}
	if nilPolicy.Len() != 0 || nilPolicy.Digest() != "" || empty.Len() != 0 {
		t.Error("nil or empty policy reports rules or a digest")
	}
}

func TestGroups(t *testing.T) {
	all := RPCs()
	admin := []string{"CreateKey", "UpdateKey", "RotateKey", "EnableKeyVersion", "DisableKeyVersion",
		"ScheduleKeyVersionDestruction", "RestoreKeyVersion"}
	use := []string{"Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "Sign", "Verify", "SignJWT"}
	read := []string{"GetKey", "ListKeys", "ListKeyVersions", "GetPublicKey"}
	tests := []struct {
		group string
		want  []string
	}{
		{"admin", admin},
		{"use", use},
		{"read", read},
		{"encrypt", []string{"Encrypt", "GenerateDataKey"}},
		{"decrypt", []string{"Decrypt"}},
		{"sign", []string{"Sign", "SignJWT"}},
		{"verify", []string{"Verify", "GetPublicKey"}},
		{"*", append(slices.Clone(use), read...)},
	}
	for _, tt := range tests {
		t.Run(tt.group, func(t *testing.T) {
			p := mustParse(t, `
rules:
  - identities: ["token:a"]
    keys: ["k"]
    allow: ["`+tt.group+`"]
`)
			for _, rpc := range all {
				want := slices.Contains(tt.want, rpc)
				if got := p.Allow("token:a", rpc, "k"); got != want {
					t.Errorf("group %q: Allow(%s) = %v, want %v", tt.group, rpc, got, want)
				}
			}
		})
	}
	if len(all) != len(admin)+len(use)+len(read) {
		t.Errorf("RPCs() has %d names, groups cover %d", len(all), len(admin)+len(use)+len(read))
	}
}

func TestAdminNotImplied(t *testing.T) {
	p := mustParse(t, `
rules:
  - identities: ["token:root"]
    keys: ["*"]
    allow: ["*", "use", "read", "encrypt", "decrypt", "sign", "verify"]
  - identities: ["token:ops"]
    keys: ["*"]
    allow: ["RotateKey"]
`)
	for _, rpc := range RPCs() {
		if IsAdmin(rpc) && p.Allow("token:root", rpc, "k") {
			t.Errorf("token:root got admin RPC %s without naming it", rpc)
		}
	}
	if !p.Allow("token:ops", "RotateKey", "k") {
		t.Error("RotateKey named explicitly is not allowed")
	}
	if p.Allow("token:ops", "CreateKey", "k") {
		t.Error("RotateKey implies CreateKey")
	}
}

func TestListKeys(t *testing.T) {
	p := mustParse(t, `
rules:
  - identities: ["token:reader"]
    keys: ["team-a-*"]
    allow: ["read"]
  - identities: ["token:lister"]
    keys: ["x"]
    allow: ["ListKeys"]
  - identities: ["token:all"]
    keys: ["x"]
    allow: ["*"]
  - identities: ["token:getter"]
    keys: ["*"]
    allow: ["GetKey", "use"]
`)
	tests := []struct {
		id   string
		want bool
	}{
		{"token:reader", true},
		{"token:lister", true},
		{"token:all", true},
		{"token:getter", false},
		{"token:nobody", false},
	}
	for _, tt := range tests {
		if got := p.Allow(tt.id, "ListKeys", ""); got != tt.want {
			t.Errorf("Allow(%s, ListKeys, \"\") = %v, want %v", tt.id, got, tt.want)
		}
	}
	// With a key, ListKeys is checked against the key patterns like any RPC.
	if !p.Allow("token:reader", "ListKeys", "team-a-1") || p.Allow("token:reader", "ListKeys", "team-b-1") {
		t.Error("ListKeys with a key does not follow the key patterns")
	}
}

func TestReEncrypt(t *testing.T) {
	p := mustParse(t, `
rules:
  - identities: ["token:rekey"]
    keys: ["old", "new"]
    allow: ["ReEncrypt"]
  - identities: ["token:ed"]
    keys: ["old", "new"]
    allow: ["encrypt", "decrypt"]
  - identities: ["token:user"]
    keys: ["old"]
    allow: ["use"]
`)
	both := func(id, src, dst string) bool {
		return p.Allow(id, "ReEncrypt", src) && p.Allow(id, "ReEncrypt", dst)
	}
	if !both("token:rekey", "old", "new") {
		t.Error("ReEncrypt granted on both keys is refused")
	}
	if both("token:ed", "old", "new") {
		t.Error("encrypt+decrypt grants ReEncrypt")
	}
	if both("token:user", "old", "new") {
		t.Error("use on the source only grants ReEncrypt to another key")
	}
	if !both("token:user", "old", "old") {
		t.Error("use does not grant ReEncrypt")
	}
}

func TestRulesUnion(t *testing.T) {
	p := mustParse(t, `
rules:
  - identities: ["spiffe://prod/ns/a/**"]
    keys: ["a-*"]
    allow: ["Encrypt"]
  - identities: ["spiffe://prod/ns/a/sa/api"]
    keys: ["a-*"]
    allow: ["Decrypt"]
`)
	id := "spiffe://prod/ns/a/sa/api"
	if !p.Allow(id, "Encrypt", "a-1") || !p.Allow(id, "Decrypt", "a-1") {
		t.Error("grants of two matching rules do not add up")
	}
	if p.Allow("spiffe://prod/ns/a/sa/web", "Decrypt", "a-1") {
		t.Error("second rule's grant leaks to another identity")
	}
}

func TestSample(t *testing.T) {
	p, err := Load(filepath.Join("testdata", "sample.yaml"))
	if err != nil {
		t.Fatalf("Load(sample): %v", err)
	}
	if p.Len() != 6 || len(p.Digest()) != 64 {
		t.Errorf("Len = %d, Digest = %q", p.Len(), p.Digest())
	}
	const login = "jwt:https://kubernetes.default.svc.cluster.local#system:serviceaccount:auth:login"
	tests := []struct {
		id, rpc, key string
		want         bool
	}{
		{"spiffe://prod.example/ns/platform/sa/sigil-admin", "CreateKey", "payments-2026", true},
		{"cn:Sigil Operator", "RotateKey", "session-signing", true},
		{"cn:Sigil Operator", "Decrypt", "payments-2026", false},
		{"spiffe://prod.example/ns/payments/sa/api", "GenerateDataKey", "payments-2026", true},
		{"spiffe://prod.example/ns/payments/sa/api", "Decrypt", "payments-2026", true},
		{"spiffe://prod.example/ns/payments/sa/api", "Decrypt", "billing-archive", false},
		{"spiffe://prod.example/ns/payments/sa/api", "ReEncrypt", "payments-2026", false},
		{"spiffe://prod.example/ns/payments/sa/rekey", "ReEncrypt", "payments-2026", true},
		{"spiffe://prod.example/ns/payments-evil/sa/api", "Decrypt", "payments-2026", false},
		{"spiffe://staging.example/ns/payments/sa/api", "Decrypt", "payments-2026", false},
		{login, "SignJWT", "session-signing", true},
		{login, "Sign", "session-signing", false},
		{"token:gateway-eu", "Verify", "session-signing", true},
		{"token:gateway-eu", "ListKeys", "", true},
		{"token:gateway-eu", "SignJWT", "session-signing", false},
		{"token:billing-batch", "Encrypt", "billing-archive", true},
		{"token:billing-batch", "Decrypt", "billing-archive", false},
		{"token:billing-batch", "ListKeys", "", false},
	}
	for _, tt := range tests {
		if got := p.Allow(tt.id, tt.rpc, tt.key); got != tt.want {
			t.Errorf("Allow(%q, %q, %q) = %v, want %v", tt.id, tt.rpc, tt.key, got, tt.want)
		}
	}
	claims := map[string]any{"iss": "https://auth.example.com", "aud": "api.example.com", "sub": "u1",
		"exp": float64(testNow.Unix() + 600)}
	if err := p.CheckJWT(login, "session-signing", claims, testNow); err != nil {
		t.Errorf("CheckJWT of sample claims: %v", err)
	}
}

func TestRPCFromProcedure(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"/sigil.v1.KeyManagementService/Encrypt", "Encrypt", true},
		{"/sigil.v1.KeyManagementService/ScheduleKeyVersionDestruction", "ScheduleKeyVersionDestruction", true},
		{"/sigil.v1.KeyManagementService/Nope", "", false},
		{"/other.v1.Service/Encrypt", "", false},
		{"Encrypt", "", false},
	}
	for _, tt := range tests {
		got, ok := RPCFromProcedure(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("RPCFromProcedure(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}
