package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/keystore"
)

// versionColumns are the columns scanned by scanVersion, in order.
const versionColumns = `key_id, version, state, hsm_id, public_key, created, destroy_time, encrypt_count`

// scanVersion reads a row of versionColumns.
func scanVersion(row pgx.Row) (keystore.Version, error) {
	var (
		v           keystore.Version
		version     int32
		destroyTime *time.Time
	)
	err := row.Scan(&v.KeyID, &version, &v.State, &v.HSMID, &v.PublicKey, &v.CreateTime, &destroyTime, &v.EncryptCount)
	if err != nil {
		return keystore.Version{}, err
	}
	v.Version = uint32(version)
	v.DestroyTime = timeValue(destroyTime)
	return v, nil
}

// collectVersions reads every row of rows as versionColumns.
func collectVersions(rows pgx.Rows) ([]keystore.Version, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.Version, error) {
		return scanVersion(row)
	})
}

// versionParam converts a version number to the column's type. Numbers that
// do not fit cannot exist, so ok is false for them.
func versionParam(v uint32) (n int32, ok bool) {
	if v > math.MaxInt32 {
		return 0, false
	}
	return int32(v), true
}

// notFound returns the error for a missing key or version.
func notFound(op string) error {
	return fmt.Errorf("keystore: %s: %w", op, keystore.ErrNotFound)
}

// insertVersion inserts a pending version.
func insertVersion(ctx context.Context, tx pgx.Tx, keyID [16]byte, version int32, hsmID []byte) (keystore.Version, error) {
	return scanVersion(tx.QueryRow(ctx, `
		INSERT INTO key_versions (key_id, version, state, hsm_id)
		VALUES ($1, $2, 'PENDING', $3)
		RETURNING `+versionColumns,
		keyID, version, hsmID))
}

// AddVersion reserves the key's next version number and inserts it,
// pending, in one transaction. It returns an error wrapping
// keystore.ErrNotFound if the key does not exist.
func (s *Store) AddVersion(ctx context.Context, keyID [16]byte, hsmID []byte) (keystore.Version, error) {
	const op = "add version"
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return keystore.Version{}, translate(ctx, op, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	// The update locks the key's row until commit, so concurrent callers
	// take numbers one after another.
	var version int32
	err = tx.QueryRow(ctx, `
		UPDATE keys SET next_version = next_version + 1
		WHERE id = $1
		RETURNING next_version - 1`,
		keyID).Scan(&version)
	if err != nil {
		return keystore.Version{}, translate(ctx, op, err)
	}
	v, err := insertVersion(ctx, tx, keyID, version, hsmID)
	if err != nil {
		return keystore.Version{}, translate(ctx, op, err)
	}
	if err := notify(ctx, tx, keyID); err != nil {
		return keystore.Version{}, translate(ctx, op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return keystore.Version{}, translate(ctx, op, err)
	}
	return v, nil
}

// lockKey locks the key's row for the rest of tx and returns the key. Every
// transaction that changes a key's versions locks the key first, so they
// serialise per key and cannot deadlock on the version rows.
func lockKey(ctx context.Context, tx pgx.Tx, keyID [16]byte) (keystore.Key, error) {
	return scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM keys WHERE id = $1 FOR UPDATE`, keyID))
}

// versionMissingOrNotPending tells apart, after a conditional update found no
// pending row, a missing version (ErrNotFound) from one in another state
// (ErrConflict).
func versionMissingOrNotPending(ctx context.Context, tx pgx.Tx, op string, keyID [16]byte, version int32) error {
	var state keystore.State
	err := tx.QueryRow(ctx, `SELECT state FROM key_versions WHERE key_id = $1 AND version = $2`,
		keyID, version).Scan(&state)
	if err != nil {
		return translate(ctx, op, err)
	}
	return fmt.Errorf("keystore: %s: version %d is %s, not %s: %w",
		op, version, state, keystore.StatePending, keystore.ErrConflict)
}

// CommitVersion moves a pending version to enabled, records its public key
// (an empty one as nil) and, if primary is true, raises the key's primary
// version to it unless a higher one is primary already, dropping a staged
// primary that is then no higher than the primary. It returns the key
// and version as updated, an error wrapping keystore.ErrNotFound if the
// version does not exist, or one wrapping keystore.ErrConflict if it is not
// pending.
func (s *Store) CommitVersion(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, primary bool) (keystore.Key, keystore.Version, error) {
	return s.commit(ctx, "commit version", keyID, version, publicKey, func(tx pgx.Tx, k keystore.Key, n int32) (keystore.Key, error) {
		if !primary {
			return k, nil
		}
		// The right-hand sides see the row as it was before the update.
		return scanKey(tx.QueryRow(ctx, `
			UPDATE keys SET
				primary_version = GREATEST(primary_version, $2),
				staged_primary = CASE WHEN staged_primary > GREATEST(primary_version, $2)
					THEN staged_primary ELSE 0 END,
				promote_time = CASE WHEN staged_primary > GREATEST(primary_version, $2)
					THEN promote_time END
			WHERE id = $1
			RETURNING `+keyColumns,
			keyID, n))
	})
}

// CommitStaged enables a pending version and stages it as the key's
// primary at promoteTime, in one transaction.
func (s *Store) CommitStaged(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, promoteTime time.Time) (keystore.Key, keystore.Version, error) {
	if promoteTime.IsZero() {
		return keystore.Key{}, keystore.Version{}, fmt.Errorf("keystore: commit staged: zero promote time")
	}
	return s.commit(ctx, "commit staged", keyID, version, publicKey, func(tx pgx.Tx, k keystore.Key, n int32) (keystore.Key, error) {
		if version <= max(k.PrimaryVersion, k.StagedPrimary) {
			return k, nil
		}
		return scanKey(tx.QueryRow(ctx, `
			UPDATE keys SET staged_primary = $2, promote_time = $3
			WHERE id = $1
			RETURNING `+keyColumns,
			keyID, n, promoteTime))
	})
}

// commit enables a pending version, records its public key and then runs
// then on the locked key row, all in one transaction that notifies
// watchers.
func (s *Store) commit(ctx context.Context, op string, keyID [16]byte, version uint32, publicKey []byte,
	then func(tx pgx.Tx, k keystore.Key, n int32) (keystore.Key, error)) (keystore.Key, keystore.Version, error) {
	n, ok := versionParam(version)
	if !ok {
		return keystore.Key{}, keystore.Version{}, notFound(op)
	}
	if len(publicKey) == 0 {
		publicKey = nil // NULL, not ''
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	k, err := lockKey(ctx, tx, keyID)
	if err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	v, err := scanVersion(tx.QueryRow(ctx, `
		UPDATE key_versions SET state = 'ENABLED', public_key = $3
		WHERE key_id = $1 AND version = $2 AND state = 'PENDING'
		RETURNING `+versionColumns,
		keyID, n, publicKey))
	if errors.Is(err, pgx.ErrNoRows) {
		return keystore.Key{}, keystore.Version{}, versionMissingOrNotPending(ctx, tx, op, keyID, n)
	}
	if err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	if k, err = then(tx, k, n); err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	if err := notify(ctx, tx, keyID); err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	return k, v, nil
}

// AbortVersion deletes a pending version and, if it was the key's last
// version, the key. It returns an error wrapping keystore.ErrNotFound if the
// version does not exist, or one wrapping keystore.ErrConflict if it is not
// pending.
func (s *Store) AbortVersion(ctx context.Context, keyID [16]byte, version uint32) error {
	const op = "abort version"
	n, ok := versionParam(version)
	if !ok {
		return notFound(op)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return translate(ctx, op, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	if _, err := lockKey(ctx, tx, keyID); err != nil {
		return translate(ctx, op, err)
	}
	tag, err := tx.Exec(ctx, `
		DELETE FROM key_versions
		WHERE key_id = $1 AND version = $2 AND state = 'PENDING'`,
		keyID, n)
	if err != nil {
		return translate(ctx, op, err)
	}
	if tag.RowsAffected() == 0 {
		return versionMissingOrNotPending(ctx, tx, op, keyID, n)
	}
	// The key's row is locked, so no version can be added meanwhile.
	_, err = tx.Exec(ctx, `
		DELETE FROM keys
		WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM key_versions WHERE key_id = $1)`,
		keyID)
	if err != nil {
		return translate(ctx, op, err)
	}
	if err := notify(ctx, tx, keyID); err != nil {
		return translate(ctx, op, err)
	}
	return translate(ctx, op, tx.Commit(ctx))
}

// GetVersion returns one version of a key, or an error wrapping
// keystore.ErrNotFound.
func (s *Store) GetVersion(ctx context.Context, keyID [16]byte, version uint32) (keystore.Version, error) {
	const op = "get version"
	n, ok := versionParam(version)
	if !ok {
		return keystore.Version{}, notFound(op)
	}
	v, err := scanVersion(s.pool.QueryRow(ctx,
		`SELECT `+versionColumns+` FROM key_versions WHERE key_id = $1 AND version = $2`,
		keyID, n))
	if err != nil {
		return keystore.Version{}, translate(ctx, op, err)
	}
	return v, nil
}

// ListVersions returns up to limit versions of a key numbered above after,
// in ascending order, pending ones included. It returns an error wrapping
// keystore.ErrNotFound if the key does not exist. A limit of zero or less
// returns no versions.
func (s *Store) ListVersions(ctx context.Context, keyID [16]byte, after uint32, limit int) ([]keystore.Version, error) {
	const op = "list versions"
	var versions []keystore.Version
	if n, ok := versionParam(after); ok && limit > 0 {
		rows, err := s.pool.Query(ctx, `
			SELECT `+versionColumns+` FROM key_versions
			WHERE key_id = $1 AND version > $2
			ORDER BY version
			LIMIT $3`,
			keyID, n, limit)
		if err != nil {
			return nil, translate(ctx, op, err)
		}
		versions, err = collectVersions(rows)
		if err != nil {
			return nil, translate(ctx, op, err)
		}
	}
	if len(versions) > 0 {
		return versions, nil
	}
	// Nothing to list: tell an empty page from a missing key.
	var exists bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM keys WHERE id = $1)`, keyID).Scan(&exists)
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	if !exists {
		return nil, notFound(op)
	}
	return nil, nil
}
