// Package pkcs11 implements hsm.Backend on a PKCS#11 token through
// github.com/miekg/pkcs11.
//
// Several Backends may share one process and one module, on the same token or
// on different ones. Cryptoki is process-global, so the module is loaded and
// initialised once per process and finalised only when the last Backend that
// initialised it closes; login state belongs to the process and token, so a
// Backend never logs out (that would log out the others).
//
// A Backend heals itself without being reopened (see Backend). The one
// remedy that reaches beyond it is the module reset, C_Finalize and
// C_Initialize, for a token that is gone: it ends the sessions and logins of
// every Backend on the module, which each recover on their next call. It
// runs only while no call is in flight. Nothing else in the process may
// finalise the module: handles cached from before would silently name other
// objects.
package pkcs11

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// DefaultMaxSessions is the session pool size used when Config.MaxSessions
// is zero.
const DefaultMaxSessions = 8

// Config says which token a Backend uses and how.
type Config struct {
	// Module is the path of the PKCS#11 library.
	Module string
	// TokenLabel is the CKA_LABEL of the token, which must be initialised
	// and have a user PIN.
	TokenLabel string
	// PIN is the user PIN. It is never logged: String, GoString and
	// LogValue redact it.
	PIN string
	// MaxSessions bounds the number of sessions opened on the token; zero
	// means DefaultMaxSessions.
	MaxSessions int
}

// String returns the configuration with the PIN redacted.
func (c Config) String() string {
	return fmt.Sprintf("pkcs11.Config{Module: %q, TokenLabel: %q, PIN: %s, MaxSessions: %d}",
		c.Module, c.TokenLabel, redact(c.PIN), c.MaxSessions)
}

// GoString returns the same as String, so that %#v does not print the PIN.
func (c Config) GoString() string { return c.String() }

// LogValue returns the configuration as a slog group with the PIN redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("module", c.Module),
		slog.String("token_label", c.TokenLabel),
		slog.String("pin", redact(c.PIN)),
		slog.Int("max_sessions", c.MaxSessions),
	)
}

func redact(pin string) string {
	if pin == "" {
		return `""`
	}
	return "[redacted]"
}

func (c Config) validate() error {
	switch {
	case c.Module == "":
		return fmt.Errorf("%w: no PKCS#11 module path", hsm.ErrInvalid)
	case c.TokenLabel == "":
		return fmt.Errorf("%w: no token label", hsm.ErrInvalid)
	case c.PIN == "":
		return fmt.Errorf("%w: no PIN", hsm.ErrInvalid)
	case c.MaxSessions < 0:
		return fmt.Errorf("%w: MaxSessions %d < 0", hsm.ErrInvalid, c.MaxSessions)
	}
	return nil
}

// Backend is an hsm.Backend on one PKCS#11 token.
//
// It heals itself: a session the token reports dead is dropped and the call
// retried on another, a token that logged out is logged in again with the
// PIN, which the Backend keeps in memory for that, and a token that is gone
// makes the module reinitialise so that the token is found again by label
// once it is back (see do). While it cannot serve a call it returns
// hsm.ErrUnavailable, never a wrong answer such as hsm.ErrNotFound for a
// key it cannot see.
//
// The context bounds every wait: for a session from the pool and for
// another GenerateKey. A PKCS#11 call already running cannot be
// interrupted; a call stuck in the module holds its session until it
// returns, and callers behind it get hsm.ErrUnavailable (wrapping their
// context's error) when their deadline comes.
type Backend struct {
	mod   *module
	label string
	pin   string
	pool  *pool

	handles  sync.Map      // string(CKA_ID) → key
	creating chan struct{} // one element while GenerateKey checks and creates
	bindMu   sync.Mutex    // serialises bind
	finds    atomic.Int64
	closed   atomic.Bool
}

var _ hsm.Backend = (*Backend)(nil)

// Open loads the module, finds the token labelled cfg.TokenLabel and logs in
// as the user.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError("opening", err)
	}
	mod, err := acquireModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	b, err := open(ctx, mod, cfg)
	if err != nil {
		_ = mod.release()
		return nil, err
	}
	return b, nil
}

func open(ctx context.Context, mod *module, cfg Config) (*Backend, error) {
	mod.calls.RLock()
	slot, err := findToken(mod.ctx, cfg.TokenLabel)
	gen := mod.gen.Load()
	mod.calls.RUnlock()
	if err != nil {
		return nil, err
	}
	n := cfg.MaxSessions
	if n == 0 {
		n = DefaultMaxSessions
	}
	b := &Backend{
		mod: mod, label: cfg.TokenLabel, pin: cfg.PIN,
		pool:     newPool(mod.ctx, slot, gen, n),
		creating: make(chan struct{}, 1),
	}
	// The session stays in the pool: the token stays logged in while this
	// application has a session open on it.
	if err := b.try(ctx, b.login); err != nil {
		b.closeSessions()
		return nil, err
	}
	return b, nil
}

// findToken returns the slot of the one initialised token labelled label.
func findToken(ctx *p11.Ctx, label string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("%w: C_GetSlotList: %v", ErrModule, err)
	}
	var found []uint
	var others []string
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			return 0, fmt.Errorf("%w: C_GetTokenInfo(slot %d): %v", ErrModule, s, err)
		}
		l := trimLabel(ti.Label)
		initialised := ti.Flags&p11.CKF_TOKEN_INITIALIZED != 0
		switch {
		case l == label && !initialised:
			return 0, fmt.Errorf("%w: token %q in slot %d is not initialised", ErrToken, label, s)
		case l == label && ti.Flags&p11.CKF_USER_PIN_INITIALIZED == 0:
			return 0, fmt.Errorf("%w: token %q has no user PIN (run C_InitPIN)", ErrToken, label)
		case l == label:
			found = append(found, s)
		case initialised:
			others = append(others, fmt.Sprintf("%q", l))
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if len(others) == 0 {
			return 0, fmt.Errorf("%w: no token labelled %q; the module has no initialised token", ErrToken, label)
		}
		return 0, fmt.Errorf("%w: no token labelled %q; tokens present: %s", ErrToken, label, strings.Join(others, ", "))
	default:
		return 0, fmt.Errorf("%w: %d tokens labelled %q", ErrToken, len(found), label)
	}
}

// trimLabel strips the padding from a CK_TOKEN_INFO label.
func trimLabel(l string) string { return strings.TrimRight(l, " \x00") }

// String describes the Backend without its PIN.
func (b *Backend) String() string {
	return fmt.Sprintf("pkcs11.Backend{token: %q}", b.label)
}

// GoString returns the same as String.
func (b *Backend) GoString() string { return b.String() }

// Ping checks that a session answers, the token is still in its slot and
// logged in, logging in again or resetting the module as needed.
func (b *Backend) Ping(ctx context.Context) error {
	err := b.session(ctx, b.checkToken)
	return classify(err, hsm.ErrUnavailable)
}

// Stats returns a snapshot of the session pool. It is safe for concurrent
// use, also with Close.
func (b *Backend) Stats() Stats { return b.pool.stats() }

// Close closes the Backend's sessions and releases the module. The Backend
// must not be used afterwards.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.closeSessions()
	return b.mod.release()
}

// closeSessions closes the pool's idle sessions, unless a module reset has
// already ended them.
func (b *Backend) closeSessions() {
	b.mod.calls.RLock()
	defer b.mod.calls.RUnlock()
	if b.pool.generation() == b.mod.gen.Load() {
		b.pool.close()
	}
}

// session runs fn on a pooled session unless the Backend is closed.
func (b *Backend) session(ctx context.Context, fn func(s p11.SessionHandle) error) error {
	if b.closed.Load() {
		return fmt.Errorf("%w: backend closed", hsm.ErrUnavailable)
	}
	return b.do(ctx, fn)
}
