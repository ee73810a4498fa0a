package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/server"
)

// sigil runs the CLI against url with the given stdin and returns its exit
// code, stdout and stderr.
func sigil(t *testing.T, url string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := &cli{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
	code := c.run(context.Background(), append([]string{"--addr", url}, args...))
	return code, out.String(), errOut.String()
}

func TestCLI(t *testing.T) {
	srv := httptest.NewServer(server.New(kms.New(hsmtest.NewMemory(), keystoretest.NewMemory()), server.Options{}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()

	code, out, stderr := sigil(t, srv.URL, "", "create-key", "--label", "team=data", "demo")
	if code != 0 || !strings.Contains(out, `"name": "demo"`) || !strings.Contains(out, `"team": "data"`) {
		t.Fatalf("create-key: %d %s %s", code, out, stderr)
	}

	plain := filepath.Join(dir, "plain.txt")
	sealed := filepath.Join(dir, "sealed.bin")
	opened := filepath.Join(dir, "opened.txt")
	if err := os.WriteFile(plain, []byte("attack at dawn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := sigil(t, srv.URL, "", "encrypt", "--in", plain, "--out", sealed, "--aad", "ctx", "demo"); code != 0 {
		t.Fatalf("encrypt: %s", stderr)
	}
	if code, _, stderr := sigil(t, srv.URL, "", "rotate-key", "demo"); code != 0 {
		t.Fatalf("rotate-key: %s", stderr)
	}
	if code, _, stderr := sigil(t, srv.URL, "", "decrypt", "--in", sealed, "--out", opened, "--aad", "ctx", "demo"); code != 0 {
		t.Fatalf("decrypt: %s", stderr)
	}
	if b, _ := os.ReadFile(opened); string(b) != "attack at dawn\n" {
		t.Fatalf("round trip through files = %q", b)
	}

	// stdin/stdout with base64.
	code, b64, _ := sigil(t, srv.URL, "hello", "encrypt", "--base64", "demo")
	if code != 0 {
		t.Fatal("encrypt from stdin failed")
	}
	if code, out, _ := sigil(t, srv.URL, b64, "decrypt", "--base64", "demo"); code != 0 || out != "hello" {
		t.Fatalf("decrypt from stdin = %d %q", code, out)
	}

	// Wrong associated data: a clean error and exit 1.
	code, _, stderr = sigil(t, srv.URL, "", "decrypt", "--in", sealed, "--aad", "other", "demo")
	if code != 1 || !strings.Contains(stderr, "invalid_argument: decryption failed") {
		t.Fatalf("wrong aad: %d %q", code, stderr)
	}

	code, out, _ = sigil(t, srv.URL, "", "list-versions", "demo")
	var vs struct {
		KeyVersions []struct{ Version int } `json:"keyVersions"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &vs) != nil || len(vs.KeyVersions) != 2 {
		t.Fatalf("list-versions: %d %s", code, out)
	}
	for i := 0; i < 4; i++ {
		sigil(t, srv.URL, "", "create-key", "extra-"+string(rune('a'+i)))
	}
	code, out, _ = sigil(t, srv.URL, "", "list-keys", "--page-size", "2")
	var ks struct{ Keys []struct{ Name string } }
	if code != 0 || json.Unmarshal([]byte(out), &ks) != nil || len(ks.Keys) != 5 {
		t.Fatalf("list-keys across pages: %d %s", code, out)
	}
	if code, out, _ := sigil(t, srv.URL, "", "get-key", "demo"); code != 0 || !strings.Contains(out, `"primaryVersion": 2`) {
		t.Fatalf("get-key: %d %s", code, out)
	}
	if code, _, stderr := sigil(t, srv.URL, "", "get-key", "nope"); code != 1 || !strings.Contains(stderr, "not_found") {
		t.Fatalf("get-key nope: %d %s", code, stderr)
	}
	if code, _, _ := sigil(t, srv.URL, "", "frobnicate"); code != 2 {
		t.Fatalf("unknown command exit = %d", code)
	}
	if code, _, _ := sigil(t, srv.URL, "", "encrypt"); code != 1 {
		t.Fatalf("encrypt without a name exit = %d", code)
	}
}
