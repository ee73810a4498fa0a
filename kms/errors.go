package kms

import (
	"errors"
	"fmt"
)

// Kinds of failure. Every error the Service returns satisfies errors.Is with
// at most one of them; an error matching none is an internal failure.
var (
	// ErrNotFound means the key or version does not exist.
	ErrNotFound = errors.New("kms: not found")
	// ErrAlreadyExists means a key with that name exists.
	ErrAlreadyExists = errors.New("kms: already exists")
	// ErrInvalidArgument means a request field is malformed.
	ErrInvalidArgument = errors.New("kms: invalid argument")
	// ErrDecrypt means a ciphertext did not decrypt, for whatever reason:
	// tampered, truncated, another key's, wrong associated data, or a
	// version that cannot decrypt. It is reported to callers as an invalid
	// argument with one fixed message.
	ErrDecrypt = errors.New("kms: decryption failed")
	// ErrFailedPrecondition means the key cannot do this now, for example
	// a signing key asked to encrypt.
	ErrFailedPrecondition = errors.New("kms: failed precondition")
	// ErrTooLarge means a field exceeds its size limit.
	ErrTooLarge = errors.New("kms: too large")
	// ErrUnavailable means the HSM or the database could not serve the
	// request; it may succeed if retried.
	ErrUnavailable = errors.New("kms: unavailable")
)

// Error is a failure whose message is safe to show to the caller: it names
// the field or rule at fault and carries no internal detail. Its Kind is one
// of the Err variables above.
type Error struct {
	Kind error
	Msg  string
}

// Error returns the caller-safe message.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns the kind, so that errors.Is(err, ErrNotFound) works.
func (e *Error) Unwrap() error { return e.Kind }

// newError returns an *Error of the given kind with a formatted message.
func newError(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// errDecrypt is the single error every decryption failure returns.
var errDecrypt = &Error{Kind: ErrDecrypt, Msg: "decryption failed"}
