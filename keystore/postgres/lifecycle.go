package postgres

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/keystore"
)

// durationParam converts an optional duration to a parameter: NULL for nil.
func durationParam(d *time.Duration) *int64 {
	if d == nil {
		return nil
	}
	n := int64(*d)
	return &n
}

// UpdateKey changes the settings that u sets and returns the key as
// updated, or an error wrapping keystore.ErrNotFound. A NextRotationTime
// pointing at the zero time clears it.
func (s *Store) UpdateKey(ctx context.Context, keyID [16]byte, u keystore.KeyUpdate) (keystore.Key, error) {
	const op = "update key"
	var next *time.Time
	if u.NextRotationTime != nil {
		next = timeParam(*u.NextRotationTime)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return keystore.Key{}, translate(ctx, op, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	k, err := scanKey(tx.QueryRow(ctx, `
		UPDATE keys SET
			rotation_period = COALESCE($2, rotation_period),
			next_rotation_time = CASE WHEN $3::boolean THEN $4::timestamptz ELSE next_rotation_time END,
			destroy_delay = COALESCE($5, destroy_delay),
			publish_lead = COALESCE($6, publish_lead)
		WHERE id = $1
		RETURNING `+keyColumns,
		keyID, durationParam(u.RotationPeriod), u.NextRotationTime != nil, next,
		durationParam(u.DestroyDelay), durationParam(u.PublishLead)))
	if err != nil {
		return keystore.Key{}, translate(ctx, op, err)
	}
	if err := notify(ctx, tx, keyID); err != nil {
		return keystore.Key{}, translate(ctx, op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return keystore.Key{}, translate(ctx, op, err)
	}
	return k, nil
}

// StagePrimary makes version the key's staged primary, to be promoted at
// promoteTime, unless the primary or the staged primary is already at least
// version, in which case it changes nothing. It returns the key, an error
// wrapping keystore.ErrNotFound for an unknown key or version, or one
// wrapping keystore.ErrConflict if the version is not enabled.
func (s *Store) StagePrimary(ctx context.Context, keyID [16]byte, version uint32, promoteTime time.Time) (keystore.Key, error) {
	const op = "stage primary"
	n, ok := versionParam(version)
	if !ok {
		return keystore.Key{}, notFound(op)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return keystore.Key{}, translate(ctx, op, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	k, state, _, err := lockVersion(ctx, tx, keyID, n)
	if err != nil {
		return keystore.Key{}, translate(ctx, op, err)
	}
	if state != keystore.StateEnabled {
		return keystore.Key{}, fmt.Errorf("keystore: %s: version %d is %s: %w", op, version, state, keystore.ErrConflict)
	}
	if version <= max(k.PrimaryVersion, k.StagedPrimary) {
		return k, nil
	}
	k, err = scanKey(tx.QueryRow(ctx, `
		UPDATE keys SET staged_primary = $2, promote_time = $3
		WHERE id = $1
		RETURNING `+keyColumns,
		keyID, n, promoteTime))
	if err != nil {
		return keystore.Key{}, translate(ctx, op, err)
	}
	if err := notify(ctx, tx, keyID); err != nil {
		return keystore.Key{}, translate(ctx, op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return keystore.Key{}, translate(ctx, op, err)
	}
	return k, nil
}

// PromoteDue makes every staged primary whose promote time is at or before
// now the primary, provided it is still enabled and higher than the
// primary; one that is not is dropped instead. It returns the keys it
// changed, ordered by ID. The keys are locked in that order, so concurrent
// calls cannot deadlock, and a key promoted by one is skipped by the other.
func (s *Store) PromoteDue(ctx context.Context, now time.Time) ([]keystore.Key, error) {
	const op = "promote due"
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	rows, err := tx.Query(ctx, `
		UPDATE keys SET
			primary_version = CASE
				WHEN staged_primary > primary_version AND EXISTS (
					SELECT 1 FROM key_versions v
					WHERE v.key_id = keys.id AND v.version = keys.staged_primary AND v.state = 'ENABLED')
				THEN staged_primary ELSE primary_version END,
			staged_primary = 0,
			promote_time = NULL
		WHERE id IN (
			SELECT id FROM keys
			WHERE staged_primary <> 0 AND promote_time <= $1
			ORDER BY id
			FOR UPDATE)
		RETURNING `+keyColumns,
		now)
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.Key, error) {
		return scanKey(row)
	})
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	for _, k := range keys {
		if err := notify(ctx, tx, k.ID); err != nil {
			return nil, translate(ctx, op, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, translate(ctx, op, err)
	}
	// Bytewise, as Postgres orders uuids.
	slices.SortFunc(keys, func(a, b keystore.Key) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return keys, nil
}

// SetVersionState changes a version's state, and its destroy time, if t
// allows it. It returns the version as updated, an error wrapping
// keystore.ErrNotFound for an unknown key or version, or one wrapping
// keystore.ErrConflict if the version is in none of t.From, or if
// t.NotPrimary is set and it is the key's primary or staged primary.
func (s *Store) SetVersionState(ctx context.Context, keyID [16]byte, version uint32, t keystore.Transition) (keystore.Version, error) {
	const op = "set version state"
	n, ok := versionParam(version)
	if !ok {
		return keystore.Version{}, notFound(op)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return keystore.Version{}, translate(ctx, op, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	k, state, destroyTime, err := lockVersion(ctx, tx, keyID, n)
	if err != nil {
		return keystore.Version{}, translate(ctx, op, err)
	}
	if !slices.Contains(t.From, state) {
		return keystore.Version{}, fmt.Errorf("keystore: %s: version %d is %s: %w", op, version, state, keystore.ErrConflict)
	}
	if !t.DueBy.IsZero() && (destroyTime == nil || destroyTime.After(t.DueBy)) {
		return keystore.Version{}, fmt.Errorf("keystore: %s: version %d is not due: %w", op, version, keystore.ErrConflict)
	}
	if t.NotPrimary && (version == k.PrimaryVersion || version == k.StagedPrimary) {
		return keystore.Version{}, fmt.Errorf("keystore: %s: version %d is the primary or staged primary: %w", op, version, keystore.ErrConflict)
	}
	v, err := scanVersion(tx.QueryRow(ctx, `
		UPDATE key_versions SET state = $3, destroy_time = $4
		WHERE key_id = $1 AND version = $2
		RETURNING `+versionColumns,
		keyID, n, string(t.To), timeParam(t.DestroyTime)))
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

// ListVersionsByState returns up to limit versions in the state, of every
// key, ordered by creation time, key ID and version, and only those whose
// destroy time is at or before dueBy if dueBy is not zero. A limit of zero
// or less returns no versions.
func (s *Store) ListVersionsByState(ctx context.Context, state keystore.State, dueBy time.Time, limit int) ([]keystore.Version, error) {
	const op = "list versions by state"
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+versionColumns+` FROM key_versions
		WHERE state = $1 AND ($2::timestamptz IS NULL OR destroy_time <= $2)
		ORDER BY created, key_id, version
		LIMIT $3`,
		string(state), timeParam(dueBy), limit)
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	versions, err := collectVersions(rows)
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	return versions, nil
}

// lockVersion locks the key's row and reads one version's state and
// destroy time, for a change that depends on both.
func lockVersion(ctx context.Context, tx pgx.Tx, keyID [16]byte, n int32) (keystore.Key, keystore.State, *time.Time, error) {
	k, err := lockKey(ctx, tx, keyID)
	if err != nil {
		return keystore.Key{}, "", nil, err
	}
	var state keystore.State
	var destroyTime *time.Time
	err = tx.QueryRow(ctx, `SELECT state, destroy_time FROM key_versions WHERE key_id = $1 AND version = $2`,
		keyID, n).Scan(&state, &destroyTime)
	return k, state, destroyTime, err
}
