package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/authn"
	"github.com/sigil-kms/sigil/server"
)

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8380": true, "127.0.0.2:1": true, "localhost:8380": true, "[::1]:8380": true,
		":8380": false, "0.0.0.0:8380": false, "[::]:8380": false, "10.0.0.1:8380": false,
		"example.com:8380": false, "127.0.0.1": false, "": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	env := map[string]string{
		"SIGIL_LISTEN": "127.0.0.1:9999", "SIGIL_DATABASE_URL": "postgres://db/x", "SIGIL_HSM_MODULE": "/lib/p11.so",
		"SIGIL_HSM_TOKEN_LABEL": "tok", "SIGIL_HSM_PIN_FILE": "/run/pin", "SIGIL_DEV": "1", "SIGIL_LOG_LEVEL": "debug",
		"SIGIL_AUDIT_SALT_FILE": "/run/salt", "SIGIL_AUDIT_STDOUT": "1",
	}
	c, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{listen: "127.0.0.1:9999", databaseURL: "postgres://db/x", hsmModule: "/lib/p11.so", hsmTokenLabel: "tok",
		hsmPINFile: "/run/pin", hsmSessions: 8, maxInFlight: server.DefaultMaxInFlight, dev: true, logLevel: "debug", schedule: 30 * time.Second, pendingGrace: 10 * time.Minute,
		auditSaltFile: "/run/salt", auditStdout: true}
	if c != want {
		t.Fatalf("config = %+v\nwant %+v", c, want)
	}
	// Flags win over the environment.
	c, err = parseConfig([]string{"--listen", "localhost:1", "--hsm-token-label", "other"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil || c.listen != "localhost:1" || c.hsmTokenLabel != "other" {
		t.Fatalf("flags over env: %+v, %v", c, err)
	}
	// The production settings from the environment.
	prod := map[string]string{
		"SIGIL_DATABASE_URL": "postgres://db/x", "SIGIL_HSM_TOKEN_LABEL": "tok", "SIGIL_HSM_PIN_FILE": "/run/pin",
		"SIGIL_LISTEN": "0.0.0.0:8380", "SIGIL_TLS_CERT": "/tls/crt", "SIGIL_TLS_KEY": "/tls/key",
		"SIGIL_POLICY_FILE": "/etc/sigil/policy.yaml", "SIGIL_CLIENT_CA_FILE": "/etc/sigil/ca.pem",
		"SIGIL_AUTH_CONFIG": "/etc/sigil/auth.yaml", "SIGIL_AUDIT_SALT_FILE": "/run/salt",
	}
	c, err = parseConfig(nil, func(k string) string { return prod[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.policyFile != "/etc/sigil/policy.yaml" || c.clientCAFile != "/etc/sigil/ca.pem" || c.authConfig != "/etc/sigil/auth.yaml" ||
		c.auditSaltFile != "/run/salt" || c.auditStdout || c.dev {
		t.Fatalf("production config = %+v", c)
	}
}

func TestConfigRefusals(t *testing.T) {
	none := func(string) string { return "" }
	_, err := parseConfig(nil, none, io.Discard)
	for _, want := range []string{"--database-url", "--hsm-token-label", "--hsm-pin-file", "--policy-file",
		"authentication method", "--audit-salt-file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("empty config: error %v does not mention %s", err, want)
		}
	}
	base := []string{"--dev", "--database-url", "x", "--hsm-token-label", "t", "--hsm-pin-file", "p"}
	// prod is base without --dev, plus what production requires.
	prod := append(base[1:len(base):len(base)], "--policy-file", "p.yaml", "--auth-config", "a.yaml", "--audit-salt-file", "s")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(base, "--tls-cert", "c"), "--tls-key"},
		{append(base, "--hsm-max-sessions", "0"), "--hsm-max-sessions"},
		{append(base, "--max-inflight", "0"), "--max-inflight must be at least 1"},
		{append(base, "--pprof-listen", "0.0.0.0:6060"), "loopback address only"},
		{append(base, "--listen", ":8380"), "non-loopback"},
		{append(base, "extra"), "unexpected argument"},
		{append(base, "--policy-file", "p.yaml"), "drop --policy-file"},
		{append(base, "--auth-config", "a.yaml"), "drop --auth-config"},
		{append(base, "--tls-cert", "c", "--tls-key", "k", "--client-ca-file", "ca"), "drop --client-ca-file"},
		{append(prod[:len(prod):len(prod)], "--client-ca-file", "ca"), "--client-ca-file (mTLS) needs --tls-cert"},
		{without(prod, "--policy-file"), "--policy-file (SIGIL_POLICY_FILE) is required"},
		{without(prod, "--audit-salt-file"), "--audit-salt-file (SIGIL_AUDIT_SALT_FILE) is required"},
		{without(prod, "--auth-config"), "an authentication method is required"},
		{append(prod[:len(prod):len(prod)], "--listen", "0.0.0.0:8380"), "needs TLS"},
		{append(prod[:len(prod):len(prod)], "--listen", ":8380"), "credentials must not travel in clear"},
	} {
		if _, err := parseConfig(tc.args, none, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
	for _, good := range [][]string{
		base,
		append(base, "--audit-salt-file", "s", "--audit-stdout"),
		prod, // loopback without TLS
		append(prod[:len(prod):len(prod)], "--listen", "0.0.0.0:8443", "--tls-cert", "c", "--tls-key", "k"),
		append(without(prod, "--auth-config"), "--tls-cert", "c", "--tls-key", "k", "--client-ca-file", "ca"),
	} {
		if _, err := parseConfig(good, none, io.Discard); err != nil {
			t.Errorf("%v: a good config refused: %v", good, err)
		}
	}
}

// without returns args without flag and its value.
func without(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

func TestAuditSaltFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name string
		path string
		want string
	}{
		{"world readable", write("world", secret, 0o644), "mode 0644 lets group/other read the audit salt file"},
		{"group readable", write("group", secret, 0o640), "chmod 600"},
		{"short", write("short", []byte("0123456789\n"), 0o600), "at least 16"},
		{"missing", filepath.Join(dir, "none"), "no such file"},
	} {
		_, err := readSalt(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--audit-salt-file") {
			t.Errorf("%s: error %v, want it to mention --audit-salt-file and %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), string(secret)) {
			t.Errorf("%s: the error shows the salt", tc.name)
		}
	}
	// A trailing newline is not part of the salt, so that a salt written
	// by an editor and by head -c are the same.
	for _, mode := range []os.FileMode{0o600, 0o400} {
		got, err := readSalt(write("good", append(secret, '\n'), mode))
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("mode %#o: readSalt = %q, %v", mode, got, err)
		}
	}
	// Production refuses a world-readable salt at start, before opening
	// anything.
	c := config{policyFile: "../../deploy/examples/policy.yaml", authConfig: "../../deploy/examples/auth.yaml",
		auditSaltFile: write("world", secret, 0o644)}
	if _, err := loadSecurity(context.Background(), c); !errors.Is(err, errSecretExposed) {
		t.Fatalf("loadSecurity with a world-readable salt: %v", err)
	}
}

func TestAuthConfig(t *testing.T) {
	const hash = "afb0e6ef0c37ed0d985958ce87f80f6964a10b0b3c08981dd1bfc6d4f7c5976b"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"empty", "", "empty"},
		{"unknown top-level field", "tokns: {a: " + hash + "}\n", "field tokns not found"},
		{"unknown issuer field", "issuers:\n  - issuer: https://i\n    audience: a\n    jwks_file: f\n    audiance: b\n", "line 5: field audiance not found"},
		{"token not hashed", "tokens: {billing: s3cr3t-token-value}\n", "tokens.billing: want the 64 hex digits"},
		{"short hash", "tokens: {billing: abcd}\n", "tokens.billing"},
		{"bad token name", "tokens: {\"bad name\": " + hash + "}\n", `name "bad name"`},
		{"tokens not a map", "tokens: [a, b]\n", "cannot unmarshal"},
		{"missing issuer", "issuers: [{audience: a, jwks_file: f}]\n", "issuers[0].issuer: required"},
		{"missing audience", "issuers: [{issuer: https://i, jwks_file: f}]\n", "issuers[0].audience: required"},
		{"no JWKS", "issuers: [{issuer: https://i, audience: a}]\n", "issuers[0]: give exactly one of jwks_file and jwks_url"},
		{"two JWKS", "issuers: [{issuer: https://i, audience: a, jwks_file: f, jwks_url: https://i/jwks}]\n", "exactly one"},
		{"cleartext JWKS URL", "issuers: [{issuer: https://i, audience: a, jwks_url: http://i.example/jwks}]\n", "issuers[0].jwks_url"},
		{"bad leeway", "issuers: [{issuer: https://i, audience: a, jwks_file: f, leeway: 30}]\n", "issuers[0].leeway"},
		{"large leeway", "issuers: [{issuer: https://i, audience: a, jwks_file: f, leeway: 1h}]\n", "issuers[0].leeway"},
		{"duplicate issuer", "issuers: [{issuer: https://i, audience: a, jwks_file: f}, {issuer: https://i, audience: b, jwks_file: g}]\n", "issuers[1].issuer"},
		{"two documents", "tokens: {}\n---\ntokens: {}\n", "more than one YAML document"},
	} {
		_, err := parseAuthConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t-token-value") {
			t.Errorf("%s: the error shows the token", tc.name)
		}
	}
	af, err := parseAuthConfig([]byte("tokens: {a: " + hash + "}\nissuers:\n  - {issuer: https://i, audience: a, jwks_url: http://127.0.0.1:9/jwks, leeway: 10s}\n"))
	if err != nil || len(af.Tokens) != 1 || af.issuers()[0].Leeway != 10*time.Second {
		t.Fatalf("a good config: %+v, %v", af, err)
	}
	// Leeway: 0s means none; an issuer without the key gets the default.
	af, err = parseAuthConfig([]byte("issuers:\n  - {issuer: https://i, audience: a, jwks_file: f, leeway: 0s}\n  - {issuer: https://j, audience: a, jwks_file: f}\n"))
	if err != nil || af.issuers()[0].Leeway != 0 || af.issuers()[1].Leeway != authn.DefaultLeeway {
		t.Fatalf("leeway 0s and no leeway: %+v, %v", af.issuers(), err)
	}
	// The error from a file names the file.
	bad := filepath.Join(t.TempDir(), "auth.yaml")
	if err := os.WriteFile(bad, []byte("tokens: {billing: nothex}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readAuthConfig(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "tokens.billing") {
		t.Fatalf("readAuthConfig: %v", err)
	}
}

// TestSamples loads the sample policy and authentication config of
// deploy/examples as sigild would (except the JWKS file, which is a path on
// a real deployment).
func TestSamples(t *testing.T) {
	// The authentication config must be private (see TestSecretFiles): a
	// private copy of the sample is read.
	dir := t.TempDir()
	b, err := os.ReadFile("../../deploy/examples/auth.yaml")
	if err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(dir, "auth-sample.yaml")
	if err := os.WriteFile(private, b, 0o600); err != nil {
		t.Fatal(err)
	}
	af, err := readAuthConfig(private)
	if err != nil {
		t.Fatal(err)
	}
	if len(af.Tokens) == 0 || len(af.Issuers) == 0 {
		t.Fatalf("the sample configures %d tokens and %d issuers", len(af.Tokens), len(af.Issuers))
	}
	salt := filepath.Join(dir, "salt")
	if err := os.WriteFile(salt, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without the issuers, whose JWKS file does not exist here.
	tokensOnly := filepath.Join(dir, "auth.yaml")
	head, _, _ := strings.Cut(string(b), "\nissuers:")
	if err := os.WriteFile(tokensOnly, []byte(head+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := loadSecurity(context.Background(), config{policyFile: "../../deploy/examples/policy.yaml", authConfig: tokensOnly, auditSaltFile: salt})
	if err != nil {
		t.Fatal(err)
	}
	if s.auth == nil || s.policy == nil || s.policy.Policy().Len() == 0 || len(s.salt) != 32 || s.describeMethods() != "token" {
		t.Fatalf("security from the samples: %+v", s)
	}
	// Dev mode: no authentication, no policy, a random salt.
	d1, err := loadSecurity(context.Background(), config{dev: true})
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := loadSecurity(context.Background(), config{dev: true})
	if d1.auth != nil || d1.policy != nil || len(d1.salt) != 32 || bytes.Equal(d1.salt, d2.salt) {
		t.Fatalf("dev security: %+v", d1)
	}
}

func TestClientCAs(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir) // cert.pem, key.pem
	if _, err := readCAs(filepath.Join(dir, "cert.pem")); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"empty": "", "key": "", "garbage": "not pem\n",
		"bad cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		p := filepath.Join(dir, name+".pem")
		if name == "key" {
			p = filepath.Join(dir, "key.pem")
		} else if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readCAs(p); err == nil || !strings.Contains(err.Error(), "--client-ca-file") {
			t.Errorf("%s: error %v", name, err)
		}
	}
	// A policy that does not parse is refused at start, naming the file.
	bad := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n  - identities: [\"token:a\"]\n    keys: [\"*\"]\n    allow: [\"Encrpyt\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadSecurity(context.Background(), config{policyFile: bad, clientCAFile: filepath.Join(dir, "cert.pem")})
	if err == nil || !strings.Contains(err.Error(), "--policy-file") || !strings.Contains(err.Error(), "Encrpyt") {
		t.Fatalf("bad policy: %v", err)
	}
}
