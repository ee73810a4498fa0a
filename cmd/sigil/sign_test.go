package main

import (
	"crypto/sha256"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-kms/sigil/client"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/server"
)

func TestCLISigning(t *testing.T) {
	srv := httptest.NewServer(server.New(kms.New(hsmtest.NewMemory(), keystoretest.NewMemory()), server.Options{}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()

	if code, _, stderr := sigil(t, srv.URL, "", "create-key", "--algorithm", "EC_P256_SHA256", "es"); code != 0 {
		t.Fatalf("create-key: %s", stderr)
	}
	code, sig, stderr := sigil(t, srv.URL, "hello", "sign", "es")
	if code != 0 {
		t.Fatalf("sign: %s", stderr)
	}
	if code, out, _ := sigil(t, srv.URL, "hello", "verify", "--signature", sig, "es"); code != 0 || !strings.HasPrefix(out, "valid") {
		t.Fatalf("verify = %d %q", code, out)
	}
	if code, out, _ := sigil(t, srv.URL, "hellO", "verify", "--signature", sig, "es"); code != 1 || out != "invalid\n" {
		t.Fatalf("verify of another message = %d %q", code, out)
	}

	// A digest, raw (JOSE) encoding, signature in a file.
	digest := sha256.Sum256([]byte("hello"))
	in := filepath.Join(dir, "digest")
	sigFile := filepath.Join(dir, "sig")
	if err := os.WriteFile(in, digest[:], 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := sigil(t, srv.URL, "", "sign", "--digest", "--raw", "--in", in, "--out", sigFile, "es"); code != 0 {
		t.Fatalf("sign --digest --raw: %s", stderr)
	}
	if b, _ := os.ReadFile(sigFile); len(b) != 64 {
		t.Fatalf("raw P-256 signature is %d bytes", len(b))
	}
	if code, out, stderr := sigil(t, srv.URL, "", "verify", "--digest", "--raw", "--in", in, "--signature-file", sigFile, "es"); code != 0 {
		t.Fatalf("verify --digest --raw = %d %q %s", code, out, stderr)
	}

	code, pem, _ := sigil(t, srv.URL, "", "public-key", "es")
	if code != 0 || !strings.HasPrefix(pem, "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("public-key = %d %q", code, pem)
	}
	if code, jwk, _ := sigil(t, srv.URL, "", "public-key", "--jwk", "es"); code != 0 || !strings.Contains(jwk, `"kty":"EC"`) || strings.Contains(jwk, `"d"`) {
		t.Fatalf("public-key --jwk = %d %q", code, jwk)
	}

	code, token, stderr := sigil(t, srv.URL, "", "sign-jwt", "--claims", `{"sub":"alice","exp":4102444800}`, "es")
	if code != 0 || strings.Count(token, ".") != 2 {
		t.Fatalf("sign-jwt = %d %q %s", code, token, stderr)
	}
	// The token verifies against the server's JWKS, with the CLI and with
	// the client package.
	if code, out, stderr := sigil(t, srv.URL, "", "verify-jwt", token); code != 0 || !strings.Contains(out, `"sub":"alice"`) {
		t.Fatalf("verify-jwt = %d %q %s", code, out, stderr)
	}
	if code, out, _ := sigil(t, srv.URL, "", "verify-jwt", "--jwks", srv.URL+"/v1/keys/es/jwks.json", token[:len(token)-3]+"AA\n"); code != 1 || out != "invalid\n" {
		t.Fatalf("verify-jwt of a damaged token = %d %q", code, out)
	}
	v, err := client.NewVerifier(t.Context(), srv.URL+"/v1/keys/es/jwks.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), strings.TrimSpace(token)); err != nil {
		t.Fatalf("token from sign-jwt: %v", err)
	}
	if code, _, stderr := sigil(t, srv.URL, `["not","an","object"]`, "sign-jwt", "es"); code != 1 || !strings.Contains(stderr, "JSON object") {
		t.Fatalf("sign-jwt with an array = %d %s", code, stderr)
	}
	if code, _, _ := sigil(t, srv.URL, "", "verify", "es"); code != 1 {
		t.Fatal("verify without a signature succeeded")
	}
}
