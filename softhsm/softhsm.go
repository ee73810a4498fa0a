// Package softhsm provisions throwaway SoftHSM2 tokens for tests and local
// runs.
//
// A test binary that uses it calls Main from TestMain. Main points
// SOFTHSM2_CONF at a configuration in a fresh temporary directory before any
// PKCS#11 module is loaded, so tokens never touch the system token directory
// and disappear when the tests end:
//
//	func TestMain(m *testing.M) { softhsm.Main(m) }
//
// Each test then asks for its own token with NewToken. Other processes
// started by a test (sigild, pkcs11-tool) see the same tokens when their
// environment carries SOFTHSM2_CONF=Token.Conf.
package softhsm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
)

// ConfEnv is the environment variable SoftHSM2 reads its configuration from.
const ConfEnv = "SOFTHSM2_CONF"

// ModuleEnv is the environment variable that overrides the SoftHSM2 library
// path.
const ModuleEnv = "SIGIL_TEST_HSM_MODULE"

// RequireEnv is the environment variable that, set to 1, turns a missing
// SoftHSM2 library from a skipped test into a failed one.
const RequireEnv = "SIGIL_TEST_REQUIRE"

// modulePaths are the places distributions install the SoftHSM2 library.
var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

// Module returns the path of the SoftHSM2 library: $SIGIL_TEST_HSM_MODULE if
// set, else the first of the usual install locations that exists.
func Module() (string, error) {
	if p := os.Getenv(ModuleEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("softhsm: %s=%s: %w", ModuleEnv, p, err)
		}
		return p, nil
	}
	for _, p := range modulePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("softhsm: SoftHSM2 library not found in %s; install softhsm2 or set %s",
		strings.Join(modulePaths, ", "), ModuleEnv)
}

// state is the process-wide SoftHSM setup. PKCS#11 modules are process-global
// (one C_Initialize per process), so the configuration and the loaded module
// are too.
var state struct {
	mu   sync.Mutex
	conf string                 // set by Main
	mods map[string]*pkcs11.Ctx // loaded modules by path, never unloaded
}

// Main runs the tests of a package against a private SoftHSM2 token
// directory and exits with their status. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sigil-softhsm-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "softhsm: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	conf, err := writeConf(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "softhsm: %v\n", err)
		return 1
	}
	if err := os.Setenv(ConfEnv, conf); err != nil {
		fmt.Fprintf(os.Stderr, "softhsm: %v\n", err)
		return 1
	}
	state.mu.Lock()
	state.conf = conf
	state.mu.Unlock()
	return m.Run()
}

// writeConf creates dir/tokens and dir/softhsm2.conf and returns the path of
// the configuration file.
func writeConf(dir string) (string, error) {
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	text := "directories.tokendir = " + tokens + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n" +
		"slots.removable = false\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return "", err
	}
	return conf, nil
}

// Token is an initialised SoftHSM2 token with a user PIN.
type Token struct {
	// Module is the path of the SoftHSM2 library.
	Module string
	// Label is the token label, unique per test process.
	Label string
	// PIN is the user PIN. Tests must not log it.
	PIN string
	// PINFile is a 0600 file holding the user PIN and nothing else.
	PINFile string
	// Conf is the SoftHSM2 configuration; pass SOFTHSM2_CONF=Conf to
	// processes that must see the token.
	Conf string
}

// String returns a description of the token without its PIN.
func (t *Token) String() string {
	return fmt.Sprintf("softhsm token %q", t.Label)
}

// GoString returns the same as String, so %#v does not print the PIN.
func (t *Token) GoString() string { return t.String() }

// Environ returns this process's environment with SOFTHSM2_CONF set to
// t.Conf, for a subprocess (such as sigild) that must see the token.
func (t *Token) Environ() []string {
	return append(os.Environ(), ConfEnv+"="+t.Conf)
}

// NewToken initialises a fresh token with a random label, SO PIN and user
// PIN. It skips the test if SoftHSM2 is not installed, unless
// SIGIL_TEST_REQUIRE=1.
func NewToken(tb testing.TB) *Token {
	tb.Helper()
	module, err := Module()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("%v (%s=1)", err, RequireEnv)
		}
		tb.Skipf("skipping: %v", err)
	}
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.conf == "" || os.Getenv(ConfEnv) != state.conf {
		tb.Fatalf("softhsm: TestMain must call softhsm.Main(m) so that %s points at a private token directory", ConfEnv)
	}
	label := "sigil-test-" + randomHex(tb, 8)
	pin := randomHex(tb, 16)
	p, err := initModule(module)
	if err == nil {
		err = initToken(p, label, randomHex(tb, 16), pin)
	}
	if err != nil {
		tb.Fatalf("softhsm: creating token %q: %v", label, err)
	}
	pinFile := filepath.Join(tb.TempDir(), "user.pin")
	if err := os.WriteFile(pinFile, []byte(pin), 0o600); err != nil {
		tb.Fatalf("softhsm: %v", err)
	}
	return &Token{Module: module, Label: label, PIN: pin, PINFile: pinFile, Conf: state.conf}
}

// initModule loads module once per process and makes sure it is
// initialised. Someone else (a Backend) may have initialised or even
// finalised it since the last call, so it calls C_Initialize every time.
// The caller holds state.mu.
func initModule(module string) (*pkcs11.Ctx, error) {
	p := state.mods[module]
	if p == nil {
		p = pkcs11.New(module)
		if p == nil {
			return nil, fmt.Errorf("cannot load PKCS#11 module %s", module)
		}
		if state.mods == nil {
			state.mods = make(map[string]*pkcs11.Ctx)
		}
		state.mods[module] = p
	}
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return nil, fmt.Errorf("C_Initialize: %w", err)
	}
	return p, nil
}

// initToken initialises the first free token as label and sets its user PIN.
func initToken(p *pkcs11.Ctx, label, soPIN, userPIN string) error {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("C_GetSlotList: %w", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return fmt.Errorf("C_GetTokenInfo: %w", err)
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free, found = s, true
			break
		}
	}
	if !found {
		return errors.New("no slot with an uninitialised token")
	}
	if err := p.InitToken(free, soPIN, label); err != nil {
		return fmt.Errorf("C_InitToken: %w", err)
	}
	// SoftHSM renumbers the slot after C_InitToken (slot IDs derive from
	// the token serial), so look the token up again by label.
	slot, err := findSlot(p, label)
	if err != nil {
		return err
	}
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("C_OpenSession: %w", err)
	}
	defer p.CloseSession(sh)
	if err := p.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("C_Login(SO): %w", err)
	}
	defer p.Logout(sh)
	if err := p.InitPIN(sh, userPIN); err != nil {
		return fmt.Errorf("C_InitPIN: %w", err)
	}
	return nil
}

// findSlot returns the slot holding the token labelled label.
func findSlot(p *pkcs11.Ctx, label string) (uint, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("C_GetSlotList: %w", err)
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return 0, fmt.Errorf("C_GetTokenInfo: %w", err)
		}
		if strings.TrimRight(ti.Label, " \x00") == label {
			return s, nil
		}
	}
	return 0, fmt.Errorf("no token labelled %q", label)
}

// randomHex returns 2n random hex digits.
func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("softhsm: %v", err)
	}
	return hex.EncodeToString(b)
}
