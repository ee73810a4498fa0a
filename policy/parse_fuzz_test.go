package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// grantedBy is the documented table of what grants each RPC: its own name
// and the groups that contain it, as an oracle independent of rpc.go.
var grantedBy = map[string][]string{
	"CreateKey": {"admin"}, "UpdateKey": {"admin"}, "RotateKey": {"admin"}, "EnableKeyVersion": {"admin"},
	"DisableKeyVersion": {"admin"}, "ScheduleKeyVersionDestruction": {"admin"}, "RestoreKeyVersion": {"admin"},
	"Encrypt": {"use", "encrypt", "*"}, "Decrypt": {"use", "decrypt", "*"}, "ReEncrypt": {"use", "*"},
	"GenerateDataKey": {"use", "encrypt", "*"}, "Sign": {"use", "sign", "*"}, "Verify": {"use", "verify", "*"},
	"SignJWT": {"use", "sign", "*"}, "GetKey": {"read", "*"}, "ListKeys": {"read", "*"},
	"ListKeyVersions": {"read", "*"}, "GetPublicKey": {"read", "verify", "*"},
}

// fuzzProbes are identities and keys every parsed policy is asked about,
// besides the fuzzed pair.
var fuzzProbes = []struct{ identity, key string }{
	{"spiffe://prod.example/ns/payments/sa/api", "payments-1"},
	{"spiffe://prod.example/ns/platform/sa/sigil-admin", "k"},
	{"jwt:https://kubernetes.default.svc.cluster.local#system:serviceaccount:auth:login", "session-signing"},
	{"token:strict", "sess-1"},
	{"token:loose", "anything"},
	{"cn:Sigil Operator", "billing-archive"},
}

// FuzzParse parses arbitrary bytes as a policy file. Parse never panics;
// a refusal is a *ParseError wrapping ErrInvalid, and a policy that parses
// parses again to one with the same digest and the same decisions. Every
// decision follows the documented rules: an RPC is granted only by a rule
// that names it or a group holding it, only ListKeys is granted for no
// key, only identities with a known scheme are granted anything, and
// CheckJWT denies exactly where Allow denies SignJWT.
func FuzzParse(f *testing.F) {
	sample, err := os.ReadFile("testdata/sample.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sample, "spiffe://prod.example/ns/payments/sa/rekey", "payments-2")
	f.Add([]byte(jwtPolicy), "token:strict", "sess-1")
	f.Add([]byte("rules: []\n"), "token:a", "k")
	f.Add([]byte("rules:\n  - identities: [\"token:*\"]\n    keys: [\"*\"]\n    allow: [\"*\"]\n"), "token:a", "k")
	f.Add([]byte("rules:\n  - &r {identities: [\"cn:**\"], keys: [k?], allow: [admin]}\n  - *r\n"), "cn:a/b", "k1")
	f.Add([]byte("x: &a [*a]\n"), "", "")
	f.Add([]byte("rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [SignJWT]\n    jwt: {max_lifetime: -1s}\n"), "token:a", "k")
	f.Add([]byte("rules: [{identities: [\"jwt:*\"], keys: [\"*\"], allow: [\"C\\x72eateKey\"]}]\n"), "jwt:a#b", "k")
	f.Fuzz(func(t *testing.T, src []byte, identity, key string) {
		p, err := Parse(src)
		if err != nil {
			checkParseError(t, p, err)
			return
		}
		again, err := Parse(src)
		sum := sha256.Sum256(src)
		if err != nil || p.Len() != again.Len() || p.Digest() != hex.EncodeToString(sum[:]) || again.Digest() != p.Digest() {
			t.Fatalf("parsed twice: %d rules, digest %s; then %v", p.Len(), p.Digest(), err)
		}
		scalars := scalarsOf(src)
		for _, pr := range append(fuzzProbes, struct{ identity, key string }{identity, key}) {
			checkDecisions(t, p, again, scalars, pr.identity, pr.key)
		}
	})
}

// checkParseError checks the refusal of a policy file.
func checkParseError(t *testing.T, p *Policy, err error) {
	t.Helper()
	var pe *ParseError
	if p != nil || !errors.Is(err, ErrInvalid) || !errors.As(err, &pe) {
		t.Fatalf("Parse = %v, %v (%T); want nil and a *ParseError", p, err, err)
	}
	if pe.File != "" || pe.Line < 0 || pe.Rule < -1 || pe.Reason == "" || !strings.HasPrefix(err.Error(), "policy: ") {
		t.Fatalf("ParseError %#v: %q", pe, err)
	}
}

// scalarsOf returns every scalar of the YAML document src.
func scalarsOf(src []byte) map[string]bool {
	var doc yaml.Node
	out := map[string]bool{}
	if yaml.Unmarshal(src, &doc) != nil {
		return out
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			out[n.Value] = true
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	return out
}

// checkDecisions asks p and its second parse about identity and key.
func checkDecisions(t *testing.T, p, again *Policy, scalars map[string]bool, identity, key string) {
	t.Helper()
	known := false
	for _, s := range []string{SchemeSPIFFE, SchemeCN, SchemeJWT, SchemeToken} {
		known = known || strings.HasPrefix(identity, s)
	}
	for _, rpc := range RPCs() {
		for _, k := range []string{key, ""} {
			got := p.Allow(identity, rpc, k)
			if got != again.Allow(identity, rpc, k) {
				t.Fatalf("Allow(%q, %s, %q) differs between two parses", identity, rpc, k)
			}
			if !got {
				continue
			}
			if k == "" && rpc != "ListKeys" {
				t.Fatalf("Allow(%q, %s, no key) = true", identity, rpc)
			}
			if !known {
				t.Fatalf("Allow(%q, %s, %q) = true for an identity of no known scheme", identity, rpc, k)
			}
			granted := scalars[rpc]
			for _, g := range grantedBy[rpc] {
				granted = granted || scalars[g]
			}
			if !granted {
				t.Fatalf("Allow(%q, %s, %q) = true, but no scalar names it or a group holding it", identity, rpc, k)
			}
		}
	}
	if p.Allow(identity, "encrypt", key) || p.Allow(identity, "*", key) || p.Allow(identity, "", key) {
		t.Fatal("Allow granted a group name or no RPC")
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	claims := map[string]any{"iss": "https://auth.example", "aud": "api", "exp": float64(now.Add(time.Minute).Unix())}
	err := p.CheckJWT(identity, key, claims, now)
	if again := again.CheckJWT(identity, key, claims, now); (err == nil) != (again == nil) || (err != nil && err.Error() != again.Error()) {
		t.Fatalf("CheckJWT differs between two parses: %v; %v", err, again)
	}
	switch allowed := p.Allow(identity, "SignJWT", key); {
	case !allowed && !errors.Is(err, ErrDenied):
		t.Fatalf("Allow(%q, SignJWT, %q) = false, CheckJWT = %v", identity, key, err)
	case allowed && err != nil && !errors.Is(err, ErrClaimsRefused):
		t.Fatalf("Allow(%q, SignJWT, %q) = true, CheckJWT = %v", identity, key, err)
	}
}
