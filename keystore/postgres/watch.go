package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/keystore"
)

// notifyChannel is the channel on which every change to a key or its
// versions is announced, with the key's ID in text form as the payload.
const notifyChannel = "sigil_keys"

// notify announces a change to the key within tx. Postgres delivers the
// notification only if tx commits, and once however often a transaction
// sends it.
func notify(ctx context.Context, tx pgx.Tx, keyID [16]byte) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, uuid.UUID(keyID).String())
	return err
}

// Watch calls changed with the ID of every key whose change commits, through
// this or any other Store on the database, until ctx ends or the connection
// fails. It holds a connection of its own, taken out of the pool, that
// listens on the sigil_keys channel; once listening it calls changed with
// the zero ID, since changes made before then were not seen. A payload that
// is not a key ID is reported as the zero ID too. Watch returns an error
// wrapping ctx's error, or keystore.ErrUnavailable if the connection fails.
func (s *Store) Watch(ctx context.Context, changed func(keyID [16]byte)) error {
	const op = "watch"
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return unavailable(translate(ctx, op, err))
	}
	// A listening session must not go back to the pool, and one whose wait
	// was interrupted may be unusable: close it.
	conn := c.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()

	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{notifyChannel}.Sanitize()); err != nil {
		return unavailable(translate(ctx, op, err))
	}
	changed([16]byte{})
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return unavailable(translate(ctx, op, err))
		}
		id, err := uuid.Parse(n.Payload)
		if err != nil {
			id = uuid.UUID{}
		}
		changed(id)
	}
}

// unavailable returns err, which translate made, wrapping
// keystore.ErrUnavailable unless it already wraps that or a context error:
// a Watch that stops for any reason but its context has lost its
// connection.
func unavailable(err error) error {
	if errors.Is(err, keystore.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", keystore.ErrUnavailable, err)
}
