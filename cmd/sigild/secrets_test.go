package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// secretContent is what the test secret files hold; no error may show it.
const secretContent = "test-secret-0123456789abcdef\n"

// writeSecret writes secretContent to dir/name with mode.
func writeSecret(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(secretContent), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return p
}

// symlink makes link point to target.
func symlink(t *testing.T, target, link string) string {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	private := writeSecret(t, dir, "private", 0o600)
	world := writeSecret(t, dir, "world", 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A Kubernetes secret volume: pin -> ..data/pin, ..data -> ..2024_01_01/.
	k8s := filepath.Join(dir, "k8s")
	if err := os.MkdirAll(filepath.Join(k8s, "..2024_01_01"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeSecret(t, filepath.Join(k8s, "..2024_01_01"), "pin", 0o400)
	symlink(t, "..2024_01_01", filepath.Join(k8s, "..data"))
	symlink(t, "..data/pin", filepath.Join(k8s, "pin"))

	type check struct {
		name string
		path string
		want error  // nil: accepted
		text string // in the error
	}
	checks := []check{
		{"mode 0600", private, nil, ""},
		{"mode 0400", writeSecret(t, dir, "readonly", 0o400), nil, ""},
		{"symlink to a 0600 file", symlink(t, private, filepath.Join(dir, "link-private")), nil, ""},
		{"Kubernetes secret volume, mode 0400", filepath.Join(k8s, "pin"), nil, ""},
		{"mode 0644", world, errSecretExposed, "mode 0644 lets group/other read the HSM PIN file; chmod 600 (or 400)"},
		{"mode 0640", writeSecret(t, dir, "group", 0o640), errSecretExposed, "mode 0640 lets group/other read"},
		{"mode 0604", writeSecret(t, dir, "other", 0o604), errSecretExposed, "mode 0604"},
		{"symlink to a 0644 file", symlink(t, world, filepath.Join(dir, "link-world")), errSecretExposed, "(-> " + world + "): mode 0644"},
		{"missing", filepath.Join(dir, "none"), fs.ErrNotExist, "cannot read the HSM PIN file: no such file or directory"},
		{"dangling symlink", symlink(t, filepath.Join(dir, "gone"), filepath.Join(dir, "dangling")), fs.ErrNotExist, "a symlink to a missing file"},
		{"directory", t.TempDir(), errNotRegular, "is a directory, not a regular file"},
		{"FIFO", fifo, errNotRegular, "is not a regular file"},
	}
	if os.Geteuid() != 0 { // root reads any file
		checks = append(checks, check{"unreadable", writeSecret(t, dir, "unreadable", 0o000), fs.ErrPermission, "permission denied"})
	}
	for _, tc := range checks {
		t.Run(tc.name, func(t *testing.T) {
			b, err := readSecret("hsm-pin-file", tc.path)
			if tc.want == nil {
				if err != nil || string(b) != secretContent {
					t.Fatalf("readSecret = %q, %v", b, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "--hsm-pin-file "+tc.path) || !strings.Contains(msg, tc.text) {
				t.Fatalf("error %q, want it to start with the flag and path and mention %q", msg, tc.text)
			}
			if strings.Contains(err.Error(), strings.TrimSpace(secretContent)) {
				t.Fatal("the error shows the secret")
			}
		})
	}
}

// TestSecretFilesAtStart checks that loadConfig reports every exposed or
// unreadable secret file together, each naming its flag.
func TestSecretFilesAtStart(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--listen", "127.0.0.1:0", "--hsm-token-label", "t", "--policy-file", "p.yaml",
		"--hsm-pin-file", writeSecret(t, dir, "pin", 0o644),
		"--database-url-file", writeSecret(t, dir, "db-url", 0o640),
		"--tls-cert", "cert.pem", "--tls-key", writeSecret(t, dir, "key.pem", 0o604),
		"--audit-salt-file", filepath.Join(dir, "none"),
		"--auth-config", t.TempDir(),
	}
	_, err := loadConfig(args, envOf(nil), io.Discard)
	for _, want := range []string{
		"--hsm-pin-file " + dir + "/pin: mode 0644 lets group/other read the HSM PIN file",
		"--database-url-file " + dir + "/db-url: mode 0640 lets group/other read the database URL file",
		"--tls-key " + dir + "/key.pem: mode 0604 lets group/other read the TLS private key",
		"--audit-salt-file " + dir + "/none: cannot read the audit salt file: no such file",
		"--auth-config ", "the authentication config is a directory",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to mention %q", err, want)
		}
	}
	// The same files, private, pass; the checks of values still run.
	for _, name := range []string{"pin", "db-url", "key.pem"} {
		if err := os.Chmod(filepath.Join(dir, name), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args = append(without(without(args, "--audit-salt-file"), "--auth-config"),
		"--audit-salt-file", writeSecret(t, dir, "salt", 0o400), "--auth-config", writeSecret(t, dir, "auth.yaml", 0o600))
	if _, err := loadConfig(args, envOf(nil), io.Discard); err != nil {
		t.Fatalf("private files refused: %v", err)
	}
	if _, err := loadConfig(without(args, "--policy-file"), envOf(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "--policy-file") {
		t.Fatalf("without --policy-file: %v", err)
	}
	// The database URL file's content, without a trailing newline, is the URL.
	c, err := loadConfig(args, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := c.dbURL(); err != nil || u != strings.TrimSpace(secretContent) {
		t.Fatalf("dbURL = %q, %v", u, err)
	}
}

// TestRefusesExposedSecrets starts sigild from a config file, then shows
// that the same configuration is refused, with a message and a non-zero
// exit, when the PIN file or the database URL file is readable by others or
// missing; and that the refusal comes before sigild opens the HSM or the
// database.
func TestRefusesExposedSecrets(t *testing.T) {
	tok := softhsm.NewToken(t)
	db := postgrestest.NewDatabase(t)
	dir := t.TempDir()
	pinBytes, err := os.ReadFile(tok.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(dir, "pin")
	urlFile := filepath.Join(dir, "database-url")
	for p, b := range map[string][]byte{pin: pinBytes, urlFile: []byte(db + "\n")} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeConfig(t, "dev: true\nlisten: 127.0.0.1:0\nhsm-module: "+tok.Module+"\nhsm-token-label: "+tok.Label+
		"\nhsm-pin-file: "+pin+"\ndatabase-url-file: "+urlFile+"\n")

	// Private files: sigild starts.
	p := launch(t, tok, []string{"--config", cfg}, nil, nil)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(); err != nil {
		t.Fatalf("sigild exit after SIGTERM: %v\n%s", err, p.output())
	}

	refused := func(t *testing.T, want string) {
		t.Helper()
		// A sigild that starts instead is killed after a minute, so that
		// the test fails instead of hanging.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "--config", cfg)
		cmd.Env = append(os.Environ(), childEnv+"=1", "SOFTHSM2_CONF="+tok.Conf)
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("sigild did not exit within a minute; output:\n%s", out)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("sigild exit %v, want status 1; output:\n%s", err, out)
		}
		if !strings.Contains(string(out), want) {
			t.Fatalf("output does not mention %q:\n%s", want, out)
		}
		// Nothing was opened: no log line, and no error from the HSM or the
		// database.
		for _, not := range []string{"listening", `"msg"`, "open HSM", "open database"} {
			if strings.Contains(string(out), not) {
				t.Fatalf("output mentions %q:\n%s", not, out)
			}
		}
		if strings.Contains(string(out), strings.TrimSpace(string(pinBytes))) || strings.Contains(string(out), db) {
			t.Fatal("output shows the PIN or the database URL")
		}
	}
	chmod := func(path string, mode os.FileMode) {
		t.Helper()
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("world-readable PIN file", func(t *testing.T) {
		chmod(pin, 0o644)
		defer chmod(pin, 0o600)
		refused(t, "sigild: --hsm-pin-file "+pin+": mode 0644 lets group/other read the HSM PIN file; chmod 600 (or 400)")
	})
	t.Run("group-readable database URL file", func(t *testing.T) {
		chmod(urlFile, 0o640)
		defer chmod(urlFile, 0o600)
		refused(t, "--database-url-file "+urlFile+": mode 0640 lets group/other read the database URL file; chmod 600 (or 400)")
	})
	t.Run("missing PIN file", func(t *testing.T) {
		if err := os.Rename(pin, pin+".away"); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(pin+".away", pin)
		refused(t, "--hsm-pin-file "+pin+": cannot read the HSM PIN file: no such file or directory")
	})
	if os.Geteuid() != 0 {
		t.Run("unreadable PIN file", func(t *testing.T) {
			chmod(pin, 0o000)
			defer chmod(pin, 0o600)
			refused(t, "--hsm-pin-file "+pin+": cannot read the HSM PIN file: permission denied")
		})
	}
}
