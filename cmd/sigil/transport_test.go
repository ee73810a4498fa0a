package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-kms/sigil/audit"
	"github.com/sigil-kms/sigil/authn"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/policy"
	"github.com/sigil-kms/sigil/server"
)

// TestCLIBearerToken drives a server that requires authentication with a
// token read from a file.
func TestCLIBearerToken(t *testing.T) {
	token := "made-up-cli-token"
	sum := sha256.Sum256([]byte(token))
	a, err := authn.New(context.Background(), authn.Config{Tokens: map[string]string{"ops": hex.EncodeToString(sum[:])}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse([]byte("rules:\n  - identities: [\"token:ops\"]\n    keys: [\"*\"]\n    allow: [\"admin\", \"*\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(kms.New(hsmtest.NewMemory(), keystoretest.NewMemory()), server.Options{
		Logger: slog.New(slog.DiscardHandler), Authenticator: a, Policy: func() *policy.Policy { return p }, Audit: audit.NewMemory(nil),
	}))
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := sigil(t, srv.URL, "", "create-key", "k"); code != 1 || !strings.Contains(stderr, "unauthenticated") {
		t.Fatalf("without a token: %d %s", code, stderr)
	}
	if code, out, stderr := sigil(t, srv.URL, "", "--token-file", file, "create-key", "k"); code != 0 || !strings.Contains(out, `"name": "k"`) {
		t.Fatalf("with --token-file: %d %s %s", code, out, stderr)
	}
	if code, _, stderr := sigil(t, "http://sigil.example:8380", "", "--token-file", file, "get-key", "k"); code != 2 || !strings.Contains(stderr, "https") {
		t.Fatalf("token over cleartext to a remote host: %d %s", code, stderr)
	}
	if code, _, stderr := sigil(t, srv.URL, "", "--token-file", "/nonexistent", "get-key", "k"); code != 2 || strings.Contains(stderr, token) {
		t.Fatalf("missing token file: %d %s", code, stderr)
	}
}
