package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// pool hands out up to cap(slots) sessions on one token. Sessions are opened
// lazily and kept until they fail or the pool closes.
type pool struct {
	ctx   *p11.Ctx
	slot  uint
	slots chan struct{} // one element per session in use

	mu   sync.Mutex
	idle []p11.SessionHandle
}

func newPool(ctx *p11.Ctx, slot uint, size int) *pool {
	return &pool{ctx: ctx, slot: slot, slots: make(chan struct{}, size)}
}

// get waits, as long as ctx allows, for a free session and returns it; the
// caller must hand it back with put.
func (p *pool) get(ctx context.Context) (p11.SessionHandle, error) {
	if err := ctx.Err(); err != nil {
		return 0, ctxError("waiting for a session", err)
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, ctxError("waiting for a session", ctx.Err())
	}
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		s := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return s, nil
	}
	p.mu.Unlock()
	s, err := p.ctx.OpenSession(p.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		<-p.slots
		return 0, fmt.Errorf("%w: C_OpenSession: %v", hsm.ErrUnavailable, err)
	}
	return s, nil
}

// put returns a session to the pool, or closes it if keep is false.
func (p *pool) put(s p11.SessionHandle, keep bool) {
	if keep {
		p.mu.Lock()
		p.idle = append(p.idle, s)
		p.mu.Unlock()
	} else {
		_ = p.ctx.CloseSession(s) // the session is already broken
	}
	<-p.slots
}

// close closes every idle session. Only this pool's sessions are closed:
// C_CloseAllSessions would also end other Backends' sessions on the token.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.idle {
		_ = p.ctx.CloseSession(s)
	}
	p.idle = nil
}

// do runs fn with a pooled session. A session that fn reports dead is
// closed; one stale session is retried on a fresh one, and a logged-out
// token is logged in again once. The context is checked before each call.
// fn's errors come back as they are, for the caller to classify.
func (b *Backend) do(ctx context.Context, fn func(s p11.SessionHandle) error) error {
	retried, relogged := false, false
	for {
		s, err := b.pool.get(ctx)
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			b.pool.put(s, true)
			return ctxError("before the call", err)
		}
		err = safeCall(func() error { return fn(s) })
		switch {
		case err == nil:
			b.pool.put(s, true)
			return nil
		case isRV(err, p11.CKR_USER_NOT_LOGGED_IN) && !relogged:
			relogged = true
			lerr := safeCall(func() error { return b.login(s) })
			b.pool.put(s, !dirty(err) && (lerr == nil || !deadSession(lerr)))
			if lerr != nil {
				return fmt.Errorf("%w: %w", hsm.ErrUnavailable, lerr)
			}
		case deadSession(err):
			b.pool.put(s, false)
			if retried || !staleSession(err) {
				return err
			}
			retried = true
		default:
			b.pool.put(s, !dirty(err))
			return err
		}
	}
}

// dirtyError marks a failure after which the session may still have an
// operation active.
type dirtyError struct{ err error }

func (e dirtyError) Error() string { return e.err.Error() }
func (e dirtyError) Unwrap() error { return e.err }

// dirty reports whether err is a dirtyError.
func dirty(err error) bool {
	var d dirtyError
	return errors.As(err, &d)
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
		b.mod.loggedIn(b.slot, b.pin)
		return nil
	case isRV(err, p11.CKR_USER_ALREADY_LOGGED_IN):
		if !b.mod.samePIN(b.slot, b.pin) {
			return fmt.Errorf("%w: incorrect PIN (differs from the PIN that logged in)", ErrLogin)
		}
		return nil
	case isRV(err, p11.CKR_PIN_INCORRECT):
		return fmt.Errorf("%w: incorrect PIN", ErrLogin)
	case isRV(err, p11.CKR_PIN_LOCKED):
		return fmt.Errorf("%w: PIN locked", ErrLogin)
	default:
		return fmt.Errorf("%w: C_Login: %w", ErrLogin, err)
	}
}
