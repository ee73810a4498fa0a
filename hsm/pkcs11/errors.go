package pkcs11

import (
	"context"
	"errors"
	"fmt"

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
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// deadSession reports whether err means the session can no longer be used
// and must be closed rather than returned to the pool.
func deadSession(err error) bool {
	var e p11.Error
	if !errors.As(err, &e) {
		return errors.Is(err, errPanic)
	}
	switch uint(e) {
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED,
		p11.CKR_DEVICE_REMOVED, p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_MEMORY,
		p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_TOKEN_NOT_RECOGNIZED,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_OPERATION_ACTIVE,
		p11.CKR_HOST_MEMORY:
		return true
	}
	return false
}

// staleSession reports whether err means only this session is gone (the
// token may have been reset), so the call is worth one retry on a fresh one.
func staleSession(err error) bool {
	return isRV(err, p11.CKR_SESSION_HANDLE_INVALID) || isRV(err, p11.CKR_SESSION_CLOSED) ||
		isRV(err, p11.CKR_OPERATION_ACTIVE)
}

// unavailable reports whether err means the module, token or session could
// not serve the call, as opposed to a problem with the request.
func unavailable(err error) bool {
	return deadSession(err) || isRV(err, p11.CKR_USER_NOT_LOGGED_IN) ||
		isRV(err, p11.CKR_PIN_EXPIRED) || isRV(err, p11.CKR_PIN_LOCKED) ||
		isRV(err, p11.CKR_SESSION_COUNT)
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
