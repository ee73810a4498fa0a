package server

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/kms"
)

// codes maps each kind of core failure to its Connect code.
var codes = []struct {
	kind error
	code connect.Code
}{
	{kms.ErrNotFound, connect.CodeNotFound},
	{kms.ErrAlreadyExists, connect.CodeAlreadyExists},
	{kms.ErrInvalidArgument, connect.CodeInvalidArgument},
	{kms.ErrDecrypt, connect.CodeInvalidArgument},
	{kms.ErrFailedPrecondition, connect.CodeFailedPrecondition},
	{kms.ErrTooLarge, connect.CodeResourceExhausted},
}

// toConnectError turns an error from the core into the error the caller
// sees. Only messages the core marked caller-safe (*kms.Error) go on the
// wire; everything else gets a generic message for its code, and the cause
// stays in the server's log. It reports whether the failure is the server's
// (so it is logged as an error) rather than the caller's.
func toConnectError(err error) (cerr *connect.Error, serverFault bool) {
	if errors.As(err, &cerr) {
		// Already a Connect error: made by connect-go itself (a message
		// too large, a body that does not parse), the caller's fault, or
		// by the server (the audit log down), its own.
		return cerr, cerr.Code() == connect.CodeUnavailable || cerr.Code() == connect.CodeInternal
	}
	var kerr *kms.Error
	if errors.As(err, &kerr) {
		for _, c := range codes {
			if errors.Is(kerr.Kind, c.kind) {
				return connect.NewError(c.code, errors.New(kerr.Msg)), false
			}
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded")), true
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled")), false
	case errors.Is(err, kms.ErrUnavailable):
		return connect.NewError(connect.CodeUnavailable, errors.New("service unavailable; retry later")), true
	}
	return connect.NewError(connect.CodeInternal, errors.New("internal error")), true
}
