package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"slices"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// Errors returned by Open. They say what is wrong with the configuration or
// the token; none carries the PIN.
var (
	// ErrModule means the PKCS#11 library could not be loaded or
	// initialised.
	ErrModule = errors.New("hsm: PKCS#11 module unusable")
	// ErrToken means no usable token carries the configured label.
	ErrToken = errors.New("hsm: token unusable")
	// ErrLogin means the user could not log in to the token.
	ErrLogin = errors.New("hsm: login failed")
)

// isRV reports whether err is, or wraps, the Cryptoki return value rv.
func isRV(err error, rv uint) bool {
	if err == nil {
		return false // without the allocation errors.As makes
	}
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// rvIn reports whether err is, or wraps, one of the Cryptoki return values.
func rvIn(err error, rvs ...uint) bool {
	if err == nil {
		return false
	}
	var e p11.Error
	return errors.As(err, &e) && slices.Contains(rvs, uint(e))
}

// deadSession reports whether err means the session can no longer be used
// and must leave the pool.
func deadSession(err error) bool {
	return errors.Is(err, errPanic) || rvIn(err,
		p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED,
		p11.CKR_DEVICE_REMOVED, p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_MEMORY,
		p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_TOKEN_NOT_RECOGNIZED,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_OPERATION_ACTIVE,
		p11.CKR_HOST_MEMORY)
}

// handleGone reports whether err means the module has already forgotten
// the session, so its handle must not be closed: the module may have given
// it to a new session since. Removing a token closes all its sessions, and
// finalising the module closes all sessions.
func handleGone(err error) bool {
	return rvIn(err, p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED,
		p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_CRYPTOKI_NOT_INITIALIZED)
}

// retryable reports whether err killed a session in a way that another
// session may not share: everything deadSession reports but a panic (a bug,
// which would only repeat) and a lack of memory.
func retryable(err error) bool {
	return deadSession(err) && !errors.Is(err, errPanic) &&
		!rvIn(err, p11.CKR_HOST_MEMORY, p11.CKR_DEVICE_MEMORY)
}

// errTokenGone marks a token that no longer answers in its slot, or a slot
// that no longer holds it.
var errTokenGone = errors.New("token gone")

// tokenGone reports whether err means the token or the module is unusable
// as it stands, so that only a module reset may bring the token back. A
// device error counts once a retry on a fresh session has failed too.
func tokenGone(err error) bool {
	return errors.Is(err, errTokenGone) || rvIn(err,
		p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT,
		p11.CKR_TOKEN_NOT_RECOGNIZED, p11.CKR_SLOT_ID_INVALID, p11.CKR_CRYPTOKI_NOT_INITIALIZED)
}

// refused reports whether err from a call proves that the module did
// nothing: the session or the login was missing when it was called.
func refused(err error) bool {
	return rvIn(err, p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_USER_NOT_LOGGED_IN,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED)
}

// unavailable reports whether err means the module, token or session could
// not serve the call, as opposed to a problem with the request.
func unavailable(err error) bool {
	return deadSession(err) || tokenGone(err) || rvIn(err,
		p11.CKR_USER_NOT_LOGGED_IN, p11.CKR_PIN_EXPIRED, p11.CKR_PIN_LOCKED, p11.CKR_SESSION_COUNT)
}

// staleHandle reports whether err means a cached object handle no longer
// names an object.
func staleHandle(err error) bool {
	return isRV(err, p11.CKR_OBJECT_HANDLE_INVALID) || isRV(err, p11.CKR_KEY_HANDLE_INVALID)
}

// ctxError wraps the error of a context that ended before the module was
// called: the call could not be served in time, which hsm.Backend reports
// as unavailability.
func ctxError(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", hsm.ErrUnavailable, what, err)
}

// errPanic marks a module call that panicked.
var errPanic = errors.New("panic in PKCS#11 call")

// classify wraps a failed call's error: context errors pass through,
// availability failures become hsm.ErrUnavailable and everything else
// becomes otherwise.
func classify(err, otherwise error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case isHSMError(err):
		return err
	case unavailable(err):
		return fmt.Errorf("%w: %v", hsm.ErrUnavailable, err)
	default:
		return fmt.Errorf("%w: %v", otherwise, err)
	}
}

// isHSMError reports whether err already wraps one of the hsm sentinels.
func isHSMError(err error) bool {
	for _, s := range []error{hsm.ErrNotFound, hsm.ErrExists, hsm.ErrDecrypt, hsm.ErrUnavailable, hsm.ErrInvalid} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
