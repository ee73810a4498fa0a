package main

import (
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/server"
)

func TestCLILifecycle(t *testing.T) {
	srv := httptest.NewServer(server.New(kms.New(hsmtest.NewMemory(), keystoretest.NewMemory()), server.Options{}))
	t.Cleanup(srv.Close)
	run := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		return sigil(t, srv.URL, stdin, args...)
	}
	if code, out, stderr := run("", "create-key", "--destroy-delay", "1h", "--rotation-period", "720h", "k"); code != 0 || !strings.Contains(out, `"destroyDelay": "3600s"`) || !strings.Contains(out, `"rotationPeriod": "2592000s"`) {
		t.Fatalf("create-key: %d %s %s", code, out, stderr)
	}
	run("", "create-key", "other")
	_, ct, _ := run("secret", "encrypt", "--base64", "k")
	if code, out, _ := run("", "rotate-key", "k"); code != 0 || !strings.Contains(out, `"version": 2`) {
		t.Fatalf("rotate-key: %d %s", code, out)
	}
	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"disable-version", "k", "2"}, 1, "failed_precondition"},
		{[]string{"disable-version", "k", "1"}, 0, "VERSION_STATE_DISABLED"},
		{[]string{"enable-version", "k", "1"}, 0, "VERSION_STATE_ENABLED"},
		{[]string{"destroy-version", "k", "1"}, 0, "VERSION_STATE_DESTROY_SCHEDULED"},
		{[]string{"restore-version", "k", "1"}, 0, "VERSION_STATE_DISABLED"},
		{[]string{"enable-version", "k", "1"}, 0, "VERSION_STATE_ENABLED"},
		{[]string{"enable-version", "k", "x"}, 1, "positive number"},
		{[]string{"enable-version", "k", "9"}, 1, "not_found"},
		{[]string{"update-key", "--rotation-period", "0s", "k"}, 0, `"name": "k"`},
		{[]string{"update-key", "--destroy-delay", "1s", "k"}, 1, "invalid_argument"},
	}
	for _, s := range steps {
		code, out, stderr := run("", s.args...)
		if code != s.code || !strings.Contains(out+stderr, s.want) {
			t.Fatalf("%v = %d %q %q, want %d and %q", s.args, code, out, stderr, s.code, s.want)
		}
	}
	code, out, _ := run("", "generate-data-key", "--aad", "f1", "k")
	if code != 0 || !strings.Contains(out, "plaintext ") || !strings.Contains(out, "version 2") {
		t.Fatalf("generate-data-key: %d %s", code, out)
	}
	var pt, wrapped string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "plaintext "); ok {
			pt = v
		}
		if v, ok := strings.CutPrefix(line, "ciphertext "); ok {
			wrapped = v
		}
	}
	raw, _ := base64.StdEncoding.DecodeString(wrapped)
	code, got, _ := run(string(raw), "decrypt", "--aad", "f1", "k")
	if code != 0 || base64.StdEncoding.EncodeToString([]byte(got)) != pt {
		t.Fatal("the wrapped data key does not decrypt to the data key")
	}
	code, moved, stderr := run(ct, "re-encrypt", "--base64", "--to", "other", "k")
	if code != 0 {
		t.Fatalf("re-encrypt: %s", stderr)
	}
	if code, out, _ := run(moved, "decrypt", "--base64", "other"); code != 0 || out != "secret" {
		t.Fatalf("decrypt the re-encrypted ciphertext = %d %q", code, out)
	}
}
