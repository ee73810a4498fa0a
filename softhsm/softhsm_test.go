package softhsm

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

func TestMain(m *testing.M) { Main(m) }

func TestModule(t *testing.T) {
	p, err := Module()
	if err != nil {
		t.Skipf("no SoftHSM2: %v", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Module() = %q: %v", p, err)
	}
}

func TestModuleEnv(t *testing.T) {
	t.Setenv(ModuleEnv, "/nonexistent/libsofthsm2.so")
	if _, err := Module(); err == nil || !strings.Contains(err.Error(), "/nonexistent/libsofthsm2.so") {
		t.Fatalf("Module() with a bad %s: err = %v, want one naming the path", ModuleEnv, err)
	}
}

func TestNewToken(t *testing.T) {
	a := NewToken(t)
	b := NewToken(t)
	if a.Label == b.Label || a.PIN == b.PIN {
		t.Fatal("two tokens share a label or PIN")
	}
	if !strings.HasPrefix(a.Label, "sigil-test-") {
		t.Errorf("Label = %q", a.Label)
	}
	if a.Conf != os.Getenv(ConfEnv) {
		t.Errorf("Conf = %q, %s = %q", a.Conf, ConfEnv, os.Getenv(ConfEnv))
	}
	fi, err := os.Stat(a.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("PIN file mode = %v, want 0600", fi.Mode().Perm())
	}
	pin, err := os.ReadFile(a.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(pin) != a.PIN {
		t.Error("PIN file does not hold the user PIN")
	}
	if s := a.String() + a.GoString(); strings.Contains(s, a.PIN) {
		t.Error("String or GoString prints the PIN")
	}
	if objs := a.Objects(t); len(objs) != 0 {
		t.Errorf("fresh token has %d objects", len(objs))
	}

	// SoftHSM offers a new uninitialised token after each C_InitToken.
	state.mu.Lock()
	defer state.mu.Unlock()
	p, err := initModule(a.Module)
	if err != nil {
		t.Fatal(err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	free := 0
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			t.Fatal(err)
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free++
		}
	}
	if free != 1 {
		t.Errorf("%d uninitialised tokens, want 1", free)
	}
}

// TestObjectsFromOtherProcess checks that Objects sees keys another process
// created on the token after this process made it, as end-to-end tests of
// sigild need.
func TestObjectsFromOtherProcess(t *testing.T) {
	tok := NewToken(t)
	tool, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal("pkcs11-tool (opensc) not installed")
		}
		t.Skip("pkcs11-tool (opensc) not installed")
	}
	if n := len(tok.Objects(t)); n != 0 {
		t.Fatalf("fresh token has %d objects", n)
	}
	for i, id := range []string{"01", "02"} {
		cmd := exec.Command(tool, "--module", tok.Module, "--token-label", tok.Label,
			"--login", "--pin", tok.PIN, "--keygen", "--key-type", "AES:32",
			"--id", id, "--label", "other-"+id)
		cmd.Env = tok.Environ()
		out, err := cmd.CombinedOutput()
		if err != nil {
			// The output never contains the PIN, but redact it anyway.
			t.Fatalf("pkcs11-tool: %v\n%s", err, bytes.ReplaceAll(out, []byte(tok.PIN), []byte("<pin>")))
		}
		objs := tok.Objects(t)
		if len(objs) != i+1 {
			t.Fatalf("after creating key %s in another process: %d objects, want %d", id, len(objs), i+1)
		}
		var found bool
		for _, o := range objs {
			if o.Label == "other-"+id {
				found = true
				if o.Class != pkcs11.CKO_SECRET_KEY || o.KeyType != pkcs11.CKK_AES || len(o.ID) != 1 || !o.Token {
					t.Errorf("object %+v", o)
				}
			}
		}
		if !found {
			t.Errorf("key %s from another process not listed", id)
		}
	}
}
