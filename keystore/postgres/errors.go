package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sigil-kms/sigil/keystore"
)

// uniqueViolation is the SQLSTATE of unique_violation.
const uniqueViolation = "23505"

// constraintErrors maps the unique constraints whose violation a caller can
// cause to the sentinel that describes it. Any other violation is a bug and
// stays an internal error.
var constraintErrors = map[string]error{
	"keys_name_key": keystore.ErrExists,
}

// translate turns an error from pgx into the error a Store method returns.
// op names the operation for logs, as in "keystore: get key: ...". The
// result wraps one of keystore's sentinels, the context's error, or, for an
// internal error, only the pgx error; callers classify it with errors.Is and
// never by its text.
func translate(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("keystore: %s: %w", op, keystore.ErrNotFound)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("keystore: %s: %w", op, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		if sentinel, ok := constraintErrors[pgErr.ConstraintName]; ok {
			return fmt.Errorf("keystore: %s: %w", op, sentinel)
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The context ended and pgx reported it some other way, for
		// example as a closed connection: the context is the cause.
		return fmt.Errorf("keystore: %s: %w: %w", op, ctxErr, err)
	}
	if isUnavailable(err) {
		return fmt.Errorf("keystore: %s: %w: %w", op, keystore.ErrUnavailable, err)
	}
	return fmt.Errorf("keystore: %s: %w", op, err)
}

// isUnavailable reports whether err means the database could not be reached
// or is refusing work for now, so that a retry may succeed.
func isUnavailable(err error) bool {
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return unavailableCode(pgErr.Code)
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	// pgconn marks errors that happened before anything reached the
	// server, such as using a connection that has been closed.
	return pgconn.SafeToRetry(err)
}

// unavailableCode reports whether a SQLSTATE means the server is unreachable,
// shutting down or out of resources.
func unavailableCode(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"): // connection exception
		return true
	case strings.HasPrefix(code, "53"): // insufficient resources
		return true
	case strings.HasPrefix(code, "57P0"): // admin/crash shutdown, cannot connect now, database dropped
		return true
	}
	return false
}
