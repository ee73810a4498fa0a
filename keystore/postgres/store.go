// Package postgres implements keystore.Store on PostgreSQL with pgx.
//
// Open connects, applies the embedded schema migrations and returns a Store
// backed by a connection pool. All methods of Store are safe to call from
// multiple goroutines and from several processes sharing one database
// (sigild replicas): every change that reads before it writes runs in one
// transaction that first locks the key's row, so concurrent AddVersion calls
// get distinct numbers and CommitVersion never lowers a key's primary
// version. Close must not be called concurrently with other methods; it
// waits for connections in use to be returned.
//
// Creation times (CreateTime) come from the database's clock, now(); every
// other time is passed in by the caller, whose clock tests control.
// Durations are stored as nanoseconds, exactly. Every change notifies
// Watch callers, of this and of other Stores, when it commits.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sigil-kms/sigil/keystore"
)

var _ keystore.Store = (*Store)(nil)

// Store is a keystore.Store on a PostgreSQL database. Create one with Open.
type Store struct {
	pool *pgxpool.Pool
}

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string, as pgx accepts), checks that it answers, applies any
// pending migrations and returns the Store. It returns an error wrapping
// keystore.ErrUnavailable if the database cannot be reached. The error text
// never contains the password.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx redacts passwords from parse errors only on a best-effort
		// basis, and the wrapped error may quote the URL: say nothing
		// about it.
		return nil, errors.New("keystore: open: cannot parse the database URL")
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "sigil"
	}
	password := cfg.ConnConfig.Password
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, redact(translate(ctx, "open", err), password)
	}
	if err := migrateWith(ctx, pool); err != nil {
		pool.Close()
		return nil, redact(err, password)
	}
	return &Store{pool: pool}, nil
}

// migrateWith runs Migrate on a connection taken out of pool for good, so
// that no session state of the migration (locks, settings) outlives it.
func migrateWith(ctx context.Context, pool *pgxpool.Pool) error {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return translate(ctx, "open", err)
	}
	conn := c.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if err := conn.Ping(ctx); err != nil {
		return translate(ctx, "open", err)
	}
	return Migrate(ctx, conn)
}

// redact returns err, or if its text contains password, an error with the
// same classification whose text has the password masked.
func redact(err error, password string) error {
	if err == nil || password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return &redactedError{
		text:  strings.ReplaceAll(err.Error(), password, "xxxxx"),
		cause: sentinelOf(err),
	}
}

// sentinelOf returns the keystore sentinel or context error that err wraps,
// or nil.
func sentinelOf(err error) error {
	for _, target := range []error{
		keystore.ErrUnavailable, keystore.ErrNotFound, keystore.ErrExists, keystore.ErrConflict,
		context.Canceled, context.DeadlineExceeded,
	} {
		if errors.Is(err, target) {
			return target
		}
	}
	return nil
}

// redactedError is an error whose text had a password masked. It unwraps to
// the sentinel of the original error only, never to the original itself.
type redactedError struct {
	text  string
	cause error
}

func (e *redactedError) Error() string { return e.text }
func (e *redactedError) Unwrap() error { return e.cause }

// Close closes the store's connections, waiting for those in use.
func (s *Store) Close() {
	s.pool.Close()
}

// Ping checks that the database answers. It returns an error wrapping
// keystore.ErrUnavailable if it does not.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return translate(ctx, "ping", err)
	}
	return nil
}

// keyColumns are the columns scanned by scanKey, in order.
const keyColumns = `id, name, purpose, algorithm, primary_version, labels, created,
	rotation_period, next_rotation_time, destroy_delay, publish_lead, staged_primary, promote_time`

// scanKey reads a row of keyColumns.
func scanKey(row pgx.Row) (keystore.Key, error) {
	var (
		k                     keystore.Key
		primary, staged       int32
		labels                map[string]string
		period, delay, lead   int64
		nextRotation, promote *time.Time
	)
	err := row.Scan(&k.ID, &k.Name, &k.Purpose, &k.Algorithm, &primary, &labels, &k.CreateTime,
		&period, &nextRotation, &delay, &lead, &staged, &promote)
	if err != nil {
		return keystore.Key{}, err
	}
	k.PrimaryVersion = uint32(primary)
	if len(labels) > 0 {
		k.Labels = labels
	}
	k.RotationPeriod = time.Duration(period)
	k.NextRotationTime = timeValue(nextRotation)
	k.DestroyDelay = time.Duration(delay)
	k.PublishLead = time.Duration(lead)
	k.StagedPrimary = uint32(staged)
	k.PromoteTime = timeValue(promote)
	return k, nil
}

// timeParam converts a time to a nullable column's parameter: NULL for the
// zero time.
func timeParam(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// timeValue converts a nullable column's value to a time: zero for NULL.
func timeValue(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// CreateKey inserts k, with its rotation settings as given, and its version
// 1, pending, in one transaction. If k.ID is zero it assigns a random UUID. It returns an error wrapping
// keystore.ErrExists if the name is taken.
func (s *Store) CreateKey(ctx context.Context, k keystore.Key, hsmID []byte) (keystore.Key, keystore.Version, error) {
	const op = "create key"
	if k.ID == ([16]byte{}) {
		id, err := uuid.NewRandom()
		if err != nil {
			return keystore.Key{}, keystore.Version{}, fmt.Errorf("keystore: %s: %w", op, err)
		}
		k.ID = id
	}
	labels := k.Labels
	if labels == nil {
		labels = map[string]string{} // jsonb '{}', not 'null'
	}

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	created, err := scanKey(tx.QueryRow(ctx, `
		INSERT INTO keys (id, name, purpose, algorithm, next_version, labels,
			rotation_period, next_rotation_time, destroy_delay, publish_lead)
		VALUES ($1, $2, $3, $4, 2, $5, $6, $7, $8, $9)
		RETURNING `+keyColumns,
		k.ID, k.Name, string(k.Purpose), string(k.Algorithm), labels,
		int64(k.RotationPeriod), timeParam(k.NextRotationTime), int64(k.DestroyDelay), int64(k.PublishLead)))
	if err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	v, err := insertVersion(ctx, tx, k.ID, 1, hsmID)
	if err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	if err := notify(ctx, tx, k.ID); err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return keystore.Key{}, keystore.Version{}, translate(ctx, op, err)
	}
	return created, v, nil
}

// GetKey returns the key named name, or an error wrapping
// keystore.ErrNotFound.
func (s *Store) GetKey(ctx context.Context, name string) (keystore.Key, error) {
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM keys WHERE name = $1`, name))
	if err != nil {
		return keystore.Key{}, translate(ctx, "get key", err)
	}
	return k, nil
}

// ListKeys returns up to limit keys whose names sort (bytewise) after
// after, ordered by name. A limit of zero or less returns no keys.
func (s *Store) ListKeys(ctx context.Context, after string, limit int) ([]keystore.Key, error) {
	const op = "list keys"
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+keyColumns+` FROM keys
		WHERE name > $1
		ORDER BY name
		LIMIT $2`,
		after, limit)
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
