package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/audit"
	auditpg "github.com/sigil-kms/sigil/audit/postgres"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// lockedBuffer is a bytes.Buffer safe for one writer and many readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProduction starts sigild without --dev, with the given flags added
// to the token and database ones, and returns it with its stdout.
func startProduction(t *testing.T, tok *softhsm.Token, dbURL string, extra ...string) (*process, *lockedBuffer) {
	t.Helper()
	stdout := new(lockedBuffer)
	return launch(t, tok, baseArgs(tok, dbURL, extra...), nil, stdout), stdout
}

// waitLog waits until sigild's stderr has n lines containing s.
func (p *process) waitLog(t *testing.T, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.count(s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("sigild did not log %q %d times:\n%s", s, n, p.output())
		}
		p.waitOutput(deadline)
	}
}

// newCA returns a CA certificate and key, and writes the certificate as PEM
// to path.
func newCA(t *testing.T, name, path string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if err := os.WriteFile(path, pemCert(der), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// clientCert returns a TLS client certificate with the SPIFFE ID spiffe,
// issued by ca.
func clientCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, spiffe string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffe)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "client"}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// bearer adds a bearer token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// TestProductionMode runs sigild as in production: TLS, client
// certificates from a CA bundle, static tokens, a policy reloaded on
// SIGHUP, a salt file, and audit records in Postgres and on stdout.
func TestProductionMode(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pool := writeCert(t, dir) // the server's cert.pem and key.pem
	ca, caKey := newCA(t, "clients", filepath.Join(dir, "ca.pem"))
	otherCA, otherKey := newCA(t, "other", filepath.Join(dir, "other.pem"))
	const opsToken = "test-ops-token-0123456789"
	sum := sha256.Sum256([]byte(opsToken))
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	authFile := write("auth.yaml", "tokens:\n  ops: "+hex.EncodeToString(sum[:])+"\n")
	policyFile := write("policy.yaml", `rules:
  - identities: ["token:ops"]
    keys: ["*"]
    allow: ["admin", "read"]
  - identities: ["spiffe://test/ns/app/**"]
    keys: ["app-*"]
    allow: ["encrypt"]
`)
	salt := write("salt", "0123456789abcdef0123456789abcdef\n")
	db := postgrestest.NewDatabase(t)
	p, stdout := startProduction(t, softhsm.NewToken(t), db,
		"--tls-cert", filepath.Join(dir, "cert.pem"), "--tls-key", filepath.Join(dir, "key.pem"),
		"--client-ca-file", filepath.Join(dir, "ca.pem"), "--auth-config", authFile, "--policy-file", policyFile,
		"--audit-salt-file", salt, "--audit-stdout")
	if strings.Contains(p.output(), "DEV MODE") {
		t.Fatal("production sigild says it is in dev mode")
	}
	p.waitLog(t, `"msg":"policy loaded"`, 1)

	client := func(cert *tls.Certificate, token string) sigilv1connect.KeyManagementServiceClient {
		tc := &tls.Config{RootCAs: pool}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		var rt http.RoundTripper = &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
		if token != "" {
			rt = bearer{token, rt}
		}
		return sigilv1connect.NewKeyManagementServiceClient(&http.Client{Transport: rt}, p.url)
	}
	app := clientCert(t, ca, caKey, "spiffe://test/ns/app/sa/web")
	stranger := clientCert(t, otherCA, otherKey, "spiffe://test/ns/app/sa/web")
	ops, web := client(nil, opsToken), client(&app, "")

	requests := 0
	expect := func(what string, err error, want connect.Code) {
		t.Helper()
		requests++
		if got := connect.CodeOf(err); err != nil && got != want || err == nil && want != 0 {
			t.Fatalf("%s: %v, want code %v", what, err, want)
		}
	}
	_, err := ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "app-1", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM})
	expect("ops creates a key", err, 0)
	const secret = "plaintext-that-must-not-be-logged"
	enc, err := web.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "app-1", Plaintext: []byte(secret), AssociatedData: []byte("aad-that-must-not-be-logged")})
	expect("mTLS client encrypts", err, 0)
	_, err = web.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "app-1", Ciphertext: enc.GetCiphertext(), AssociatedData: []byte("aad-that-must-not-be-logged")})
	expect("encrypt-only client decrypts", err, connect.CodePermissionDenied)
	_, err = client(nil, "").Encrypt(ctx, &sigilv1.EncryptRequest{Name: "app-1", Plaintext: []byte("x")})
	expect("no credentials", err, connect.CodeUnauthenticated)
	_, err = client(&stranger, "").Encrypt(ctx, &sigilv1.EncryptRequest{Name: "app-1", Plaintext: []byte("x")})
	expect("certificate from another CA", err, connect.CodeUnauthenticated)
	_, err = client(nil, "wrong-token").GetKey(ctx, &sigilv1.GetKeyRequest{Name: "app-1"})
	expect("unknown token", err, connect.CodeUnauthenticated)

	// A policy that does not parse is refused on SIGHUP; the old one stays.
	write("policy.yaml", "rules:\n  - identities: [\"token:ops\"]\n    keys: [\"*\"]\n    allow: [\"Encrpyt\"]\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "policy reload failed; the previous policy stays in force", 1)
	_, err = web.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "app-1", Plaintext: []byte("x")})
	expect("encrypt after a failed reload", err, 0)
	// A good one is put in force.
	write("policy.yaml", "rules:\n  - identities: [\"spiffe://test/ns/app/**\"]\n    keys: [\"app-*\"]\n    allow: [\"encrypt\", \"decrypt\"]\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, `"msg":"policy reloaded"`, 1)
	if p.count(`"rules":1`) == 0 || p.count(`"digest":`) < 2 {
		t.Fatalf("reload log lacks the rule count or digest:\n%s", p.output())
	}
	_, err = web.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "app-1", Ciphertext: enc.GetCiphertext(), AssociatedData: []byte("aad-that-must-not-be-logged")})
	expect("decrypt after the reload", err, 0)
	_, err = ops.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "app-1"})
	expect("ops after the reload", err, connect.CodePermissionDenied)

	// A clean shutdown writes every record before it exits.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(); err != nil {
		t.Fatalf("sigild exit: %v\n%s", err, p.output())
	}
	// One record per request, plus the intent record written before the
	// one change to keys (CreateKey).
	records := requests + 1
	checked, bad, err := auditpg.VerifyDatabase(ctx, db)
	if err != nil || bad != 0 || checked != int64(records) {
		t.Fatalf("audit log: %d records (want %d), first bad %d, %v", checked, records, bad, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != records {
		t.Fatalf("stdout has %d audit lines, want %d:\n%s", len(lines), records, stdout)
	}
	identities := map[string]int{}
	for _, l := range lines {
		var r audit.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		identities[r.Identity]++
	}
	if identities["token:ops"] != 3 || identities["spiffe://test/ns/app/sa/web"] != 4 || identities[""] != 3 {
		t.Fatalf("audit identities = %v", identities)
	}
	all := stdout.String() + p.output()
	for _, s := range []string{secret, "aad-that-must-not-be-logged", opsToken, "0123456789abcdef0123456789abcdef"} {
		if strings.Contains(all, s) {
			t.Fatalf("stdout or stderr contains %q", s)
		}
	}
}

// TestDevModeSays checks that --dev says so at start.
func TestDevModeSays(t *testing.T) {
	p := startSigild(t, softhsm.NewToken(t), postgrestest.NewDatabase(t))
	if !strings.Contains(p.output(), "sigild: DEV MODE: no authentication") {
		t.Fatalf("dev mode not announced:\n%s", p.output())
	}
}
