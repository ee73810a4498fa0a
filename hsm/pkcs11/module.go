package pkcs11

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"

	p11 "github.com/miekg/pkcs11"
)

// module is a loaded PKCS#11 library shared by every Backend in the process
// that uses the same path. Cryptoki is process-global: one C_Initialize per
// process, and C_Finalize ends it for everyone.
type module struct {
	key   string
	ctx   *p11.Ctx
	refs  int  // Backends using the module; guarded by modules.mu
	owned bool // this registry's C_Initialize succeeded, so it may finalise

	// calls is held for reading around every use of ctx by a Backend and
	// for writing by reset: C_Finalize must not run while another call
	// does.
	calls sync.RWMutex
	// gen counts resets. Sessions and object handles of an older
	// generation are void: the module may give their numbers to new ones.
	gen atomic.Uint64
	// resetWanted is set when a Backend found its token gone and a reset
	// has not run since.
	resetWanted atomic.Bool

	pinMu sync.Mutex
	pins  map[string][sha256.Size]byte // token label → hash of the PIN that logged in
}

// loggedIn records that pin logged the user in on the token labelled label.
func (m *module) loggedIn(label, pin string) {
	m.pinMu.Lock()
	defer m.pinMu.Unlock()
	if m.pins == nil {
		m.pins = make(map[string][sha256.Size]byte)
	}
	m.pins[label] = sha256.Sum256([]byte(pin))
}

// samePIN reports whether pin is the one a Backend of this process logged in
// to the token labelled label with, or whether no Backend did. C_Login
// answers CKR_USER_ALREADY_LOGGED_IN without checking the PIN, so this is
// how a second Backend with a wrong PIN is caught.
func (m *module) samePIN(label, pin string) bool {
	m.pinMu.Lock()
	defer m.pinMu.Unlock()
	h, ok := m.pins[label]
	sum := sha256.Sum256([]byte(pin))
	return !ok || subtle.ConstantTimeCompare(h[:], sum[:]) == 1
}

// reset finalises and initialises the module again. That closes every
// session of every Backend on it, logs every token out and makes the module
// look at its slots and tokens afresh: SoftHSM, for one, serves a token
// whose directory went missing as an empty, broken one until it is
// initialised again, even after the directory is back. Each Backend
// notices the new generation on its next call and finds its token again.
//
// reset runs only if no other call is in flight, since C_Finalize must not
// run under one; it never waits, and reports whether it ran. If C_Initialize
// fails, the next call tries again.
func (m *module) reset() bool {
	if !m.calls.TryLock() {
		return false
	}
	defer m.calls.Unlock()
	_ = m.ctx.Finalize() // CKR_CRYPTOKI_NOT_INITIALIZED if someone else did
	err := m.ctx.Initialize()
	m.gen.Add(1)
	m.pinMu.Lock()
	clear(m.pins)
	m.pinMu.Unlock()
	m.resetWanted.Store(err != nil && !isRV(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED))
	return true
}

// modules is the process-wide registry of loaded modules, keyed by the
// library's resolved path.
var modules = struct {
	mu sync.Mutex
	m  map[string]*module
}{m: make(map[string]*module)}

// acquireModule loads and initialises the library at path, or takes another
// reference to it if it is already loaded.
func acquireModule(path string) (*module, error) {
	key := path
	if real, err := filepath.EvalSymlinks(path); err == nil {
		key = real
	}
	modules.mu.Lock()
	defer modules.mu.Unlock()
	if m := modules.m[key]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("%w: cannot load PKCS#11 module %s", ErrModule, path)
	}
	owned := true
	if err := ctx.Initialize(); err != nil {
		if !isRV(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			ctx.Destroy()
			return nil, fmt.Errorf("%w: C_Initialize %s: %v", ErrModule, path, err)
		}
		// Someone else in this process (a test helper, another library)
		// initialised the module; it is theirs to finalise.
		owned = false
	}
	m := &module{key: key, ctx: ctx, refs: 1, owned: owned}
	modules.m[key] = m
	return m, nil
}

// release drops a reference and, with the last one, finalises the module if
// this registry initialised it.
func (m *module) release() error {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return nil
	}
	delete(modules.m, m.key)
	var err error
	if m.owned {
		if e := m.ctx.Finalize(); e != nil && !isRV(e, p11.CKR_CRYPTOKI_NOT_INITIALIZED) {
			err = fmt.Errorf("%w: C_Finalize: %v", ErrModule, e)
		}
	}
	m.ctx.Destroy()
	return err
}
