package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sigil-kms/sigil/keystore"
)

func TestTranslate(t *testing.T) {
	netErr := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	tests := []struct {
		name string
		err  error
		want error // nil: internal, wrapping none of the sentinels
	}{
		{"no rows", pgx.ErrNoRows, keystore.ErrNotFound},
		{"wrapped no rows", fmt.Errorf("scan: %w", pgx.ErrNoRows), keystore.ErrNotFound},
		{"deadline", fmt.Errorf("timeout: %w", context.DeadlineExceeded), context.DeadlineExceeded},
		{"cancelled", context.Canceled, context.Canceled},
		{"duplicate name", &pgconn.PgError{Code: "23505", ConstraintName: "keys_name_key"}, keystore.ErrExists},
		{"duplicate HSM ID", &pgconn.PgError{Code: "23505", ConstraintName: "key_versions_hsm_id_key"}, nil},
		{"check violation", &pgconn.PgError{Code: "23514", ConstraintName: "keys_name_check"}, nil},
		{"syntax error", &pgconn.PgError{Code: "42601", Message: "syntax error at or near \"SELEC\""}, nil},
		{"connection failure", &pgconn.PgError{Code: "08006"}, keystore.ErrUnavailable},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, keystore.ErrUnavailable},
		{"database dropped", &pgconn.PgError{Code: "57P04"}, keystore.ErrUnavailable},
		{"query cancelled by the server", &pgconn.PgError{Code: "57014"}, nil},
		{"too many connections", &pgconn.PgError{Code: "53300"}, keystore.ErrUnavailable},
		{"net error", netErr, keystore.ErrUnavailable},
		{"unexpected EOF", fmt.Errorf("receive message: %w", io.ErrUnexpectedEOF), keystore.ErrUnavailable},
		{"other", errors.New("something odd"), nil},
	}
	sentinels := []error{keystore.ErrNotFound, keystore.ErrExists, keystore.ErrConflict, keystore.ErrUnavailable,
		context.Canceled, context.DeadlineExceeded}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := translate(context.Background(), "get key", tc.err)
			if !strings.HasPrefix(got.Error(), "keystore: get key: ") {
				t.Errorf("translate = %q, want the prefix %q", got, "keystore: get key: ")
			}
			for _, s := range sentinels {
				if want := s == tc.want; errors.Is(got, s) != want {
					t.Errorf("translate(%v) = %v; errors.Is(%v) = %t, want %t", tc.err, got, s, !want, want)
				}
			}
		})
	}
	if err := translate(context.Background(), "x", nil); err != nil {
		t.Errorf("translate(nil) = %v", err)
	}
}

func TestTranslateEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// pgx may report a cancelled query as a closed connection.
	err := translate(ctx, "get key", io.ErrUnexpectedEOF)
	if !errors.Is(err, context.Canceled) || errors.Is(err, keystore.ErrUnavailable) {
		t.Errorf("translate with an ended context = %v, want context.Canceled only", err)
	}
}

func TestRedact(t *testing.T) {
	err := fmt.Errorf("keystore: open: %w: failed for hunter2", keystore.ErrUnavailable)
	got := redact(err, "hunter2")
	if strings.Contains(got.Error(), "hunter2") || !errors.Is(got, keystore.ErrUnavailable) {
		t.Errorf("redact = %v", got)
	}
	if got := redact(err, ""); got != err {
		t.Errorf("redact with no password changed the error: %v", got)
	}
}
