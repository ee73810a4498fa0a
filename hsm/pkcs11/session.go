package pkcs11

import (
	"context"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// How a Backend heals. A call runs fn on a pooled session (try); fn's
// errors decide what happens next:
//
//   - A dead session (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
//     CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, ...) is
//     dropped, closed if the module still knows it, and the pool's other
//     idle sessions are checked before they are used again. The call is
//     tried once more on another session.
//   - A logged-out token (CKR_USER_NOT_LOGGED_IN) is logged in again with
//     the PIN the Backend keeps, and the call is tried once more.
//   - A token that is gone (its slot or token info no longer answers, or
//     the module was finalised) makes the module reset: C_Finalize and
//     C_Initialize, after which every Backend on the module finds its token
//     again by label and opens new sessions. The call is tried once more.
//
// Retrying is safe because every call is idempotent, except GenerateKey,
// which marks the failures after which its key may exist as final.
// Everything else comes back to the caller unchanged, to be classified.

// do runs fn on a pooled session, healing the session, the login and the
// module as described above.
func (b *Backend) do(ctx context.Context, fn func(s p11.SessionHandle) error) error {
	reset := false
	if b.mod.resetWanted.Load() {
		if !b.mod.reset() {
			return errResetting
		}
		reset = true
	}
	for {
		err := b.attempt(ctx, fn)
		if !tokenGone(err) {
			return err
		}
		b.mod.resetWanted.Store(true)
		if reset || !b.mod.reset() || final(err) {
			return err
		}
		reset = true
	}
}

// errResetting is returned while a module reset waits for calls in flight.
var errResetting = fmt.Errorf("%w: the PKCS#11 module is being reset", hsm.ErrUnavailable)

// attempt runs fn, logging in again once and retrying once on another
// session after a failure that a new login or session may cure.
func (b *Backend) attempt(ctx context.Context, fn func(s p11.SessionHandle) error) error {
	retried, relogged := false, false
	for {
		err := b.try(ctx, fn)
		switch {
		case err == nil:
			return nil
		case isRV(err, p11.CKR_USER_NOT_LOGGED_IN) && !relogged && !final(err):
			relogged = true
			if lerr := b.try(ctx, b.login); lerr != nil {
				if isHSMError(lerr) {
					return lerr
				}
				return fmt.Errorf("%w: %w", hsm.ErrUnavailable, lerr)
			}
		case retryable(err) && !retried && !final(err):
			retried = true
		default:
			return err
		}
	}
}

// try runs fn once on a pooled session and then keeps, closes or forgets
// the session as fn's error says. The context is checked before the call.
func (b *Backend) try(ctx context.Context, fn func(s p11.SessionHandle) error) error {
	if err := b.pool.acquire(ctx); err != nil {
		return err
	}
	// Sessions are used under the module's read lock, so that a reset
	// never finalises the module under a call. A reset never waits for the
	// lock, so this only fails while one runs.
	if !b.mod.calls.TryRLock() {
		b.pool.release()
		return errResetting
	}
	defer b.mod.calls.RUnlock()
	if err := b.bind(); err != nil {
		b.pool.release()
		return err
	}
	s, err := b.pool.take()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		b.pool.put(s)
		return ctxError("before the call", err)
	}
	err = safeCall(func() error { return fn(s) })
	switch {
	case err == nil:
		b.pool.put(s)
	case deadSession(err):
		b.pool.drop(s, !handleGone(err), true)
		b.pool.sweep()
	case dirty(err):
		b.pool.drop(s, true, false)
	default:
		b.pool.put(s)
	}
	return err
}

// bind makes sure the pool belongs to the module's current generation:
// after a reset it finds the token again by label, forgets the idle
// sessions and the cached object handles of the old generation. The caller
// holds the module's read lock.
func (b *Backend) bind() error {
	gen := b.mod.gen.Load()
	if b.pool.generation() == gen {
		return nil
	}
	b.bindMu.Lock()
	defer b.bindMu.Unlock()
	if b.pool.generation() == gen {
		return nil
	}
	slot, err := findToken(b.mod.ctx, b.label)
	if err != nil {
		return fmt.Errorf("%w: after a module reset: %w", errTokenGone, err)
	}
	b.handles.Clear()
	b.pool.rebind(slot, gen)
	return nil
}

// dirtyError marks a failure after which the session may still have an
// operation active, so it is closed rather than kept.
type dirtyError struct{ err error }

func (e dirtyError) Error() string { return e.err.Error() }
func (e dirtyError) Unwrap() error { return e.err }

// dirty reports whether err is a dirtyError.
func dirty(err error) bool {
	var d dirtyError
	return errors.As(err, &d)
}

// finalError marks a failure after which the call must not be repeated:
// the module may have done part of it (GenerateKey's key may exist).
type finalError struct{ err error }

func (e finalError) Error() string { return e.err.Error() }
func (e finalError) Unwrap() error { return e.err }

// final reports whether err is a finalError.
func final(err error) bool {
	var f finalError
	return errors.As(err, &f)
}

// safeCall runs fn and turns a panic into an error wrapping errPanic, which
// closes the session. It is the last line of defence: the wrapper library
// should never panic, but a panic must not take the server down.
func safeCall(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errPanic, r)
		}
	}()
	return fn()
}

// login logs the user in on session s. Login state belongs to the
// application and token, so logging in on one session logs in all of them.
func (b *Backend) login(s p11.SessionHandle) error {
	err := b.mod.ctx.Login(s, p11.CKU_USER, b.pin)
	switch {
	case err == nil:
		b.mod.loggedIn(b.label, b.pin)
		return nil
	case isRV(err, p11.CKR_USER_ALREADY_LOGGED_IN):
		if !b.mod.samePIN(b.label, b.pin) {
			return fmt.Errorf("%w: incorrect PIN (differs from the PIN that logged in)", ErrLogin)
		}
		return nil
	case isRV(err, p11.CKR_PIN_INCORRECT):
		return fmt.Errorf("%w: incorrect PIN", ErrLogin)
	case isRV(err, p11.CKR_PIN_LOCKED):
		return fmt.Errorf("%w: PIN locked", ErrLogin)
	case deadSession(err) || tokenGone(err):
		return fmt.Errorf("%w: C_Login: %w", hsm.ErrUnavailable, err)
	default:
		return fmt.Errorf("%w: C_Login: %w", ErrLogin, err)
	}
}

// checkToken returns nil if session s works, the token in the Backend's slot
// is still the one it opened, and the user is logged in. Otherwise it
// returns the session's error (a dead session is retried), an error
// wrapping errTokenGone (the module is reset) or one wrapping
// CKR_USER_NOT_LOGGED_IN (the user logs in again).
//
// A token in trouble hides objects: a logged-out token hides private ones,
// and SoftHSM serves a token whose directory went missing as an empty one.
// So a search that finds nothing, or a handle that stopped working, proves
// nothing until checkToken passes.
func (b *Backend) checkToken(s p11.SessionHandle) error {
	info, err := b.mod.ctx.GetSessionInfo(s)
	if err != nil {
		return fmt.Errorf("C_GetSessionInfo: %w", err)
	}
	ti, err := b.mod.ctx.GetTokenInfo(b.pool.currentSlot())
	switch {
	case err != nil:
		return fmt.Errorf("%w: C_GetTokenInfo: %w", errTokenGone, err)
	case trimLabel(ti.Label) != b.label || ti.Flags&p11.CKF_TOKEN_INITIALIZED == 0:
		return fmt.Errorf("%w: the slot no longer holds token %q", errTokenGone, b.label)
	case info.State != p11.CKS_RW_USER_FUNCTIONS && info.State != p11.CKS_RO_USER_FUNCTIONS:
		return fmt.Errorf("session state %d: %w", info.State, p11.Error(p11.CKR_USER_NOT_LOGGED_IN))
	}
	return nil
}
