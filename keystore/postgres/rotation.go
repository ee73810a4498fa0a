package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/keystore"
)

// ListDueRotations returns up to limit keys whose next rotation time is set
// and at or before now, earliest first (then by ID). A limit of zero or
// less returns no keys.
func (s *Store) ListDueRotations(ctx context.Context, now time.Time, limit int) ([]keystore.Key, error) {
	const op = "list due rotations"
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+keyColumns+` FROM keys
		WHERE next_rotation_time IS NOT NULL AND next_rotation_time <= $1
		ORDER BY next_rotation_time, id
		LIMIT $2`,
		now, limit)
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.Key, error) {
		return scanKey(row)
	})
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	return keys, nil
}

// ClaimRotation sets the key's next rotation time to next (NULL if next is
// zero) if it is set and at or before now, and reports whether it did. The
// condition and the change are one statement, so of concurrent callers,
// on any Store, exactly one claims a due rotation. An unknown key is not
// claimed, without error.
func (s *Store) ClaimRotation(ctx context.Context, keyID [16]byte, now, next time.Time) (bool, error) {
	const op = "claim rotation"
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, translate(ctx, op, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	tag, err := tx.Exec(ctx, `
		UPDATE keys SET next_rotation_time = $3
		WHERE id = $1 AND next_rotation_time IS NOT NULL AND next_rotation_time <= $2`,
		keyID, now, timeParam(next))
	if err != nil {
		return false, translate(ctx, op, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	if err := notify(ctx, tx, keyID); err != nil {
		return false, translate(ctx, op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, translate(ctx, op, err)
	}
	return true, nil
}

// ReserveEncryptions adds n to the version's encryption count in one
// statement and returns the new count, or an error wrapping
// keystore.ErrNotFound for an unknown version. It does not notify Watch
// callers: counts change too often, and no cache holds them.
func (s *Store) ReserveEncryptions(ctx context.Context, keyID [16]byte, version uint32, n int64) (int64, error) {
	const op = "reserve encryptions"
	v, ok := versionParam(version)
	if !ok {
		return 0, notFound(op)
	}
	var count int64
	err := s.pool.QueryRow(ctx, `
		UPDATE key_versions SET encrypt_count = encrypt_count + $3
		WHERE key_id = $1 AND version = $2
		RETURNING encrypt_count`,
		keyID, v, n).Scan(&count)
	if err != nil {
		return 0, translate(ctx, op, err)
	}
	return count, nil
}
