package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

// migrationsFS holds the audit log's numbered SQL migrations, applied in
// order. They are separate from the key store's.
//
//go:embed migrations/*.sql
var migrationsFS embed.FS

// versionTable is the table in which tern records the audit log's applied
// migration. The key store uses another one.
const versionTable = "sigil_audit_schema_version"

// migrationLock is the key of the session-level advisory lock held while
// migrating, so that replicas starting together migrate one after another.
const migrationLock int64 = 0x5369_6769_6c41_7564 // "SigilAud"

// Migrate brings the audit log's schema in conn's database up to date,
// applying the embedded migrations not yet recorded in
// sigil_audit_schema_version, under an advisory lock so that concurrent
// callers migrate exactly once between them. A schema migrated beyond the
// embedded migrations (by a newer release) is left as it is. Open calls
// Migrate; call it directly only to migrate without opening a Log. If it
// fails, close conn.
func Migrate(ctx context.Context, conn *pgx.Conn) (err error) {
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("audit: migrate: lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrationLock); uerr != nil && err == nil {
			err = fmt.Errorf("audit: migrate: unlock: %w", uerr)
		}
	}()
	m, err := migrate.NewMigrator(ctx, conn, versionTable)
	if err != nil {
		return fmt.Errorf("audit: migrate: prepare: %w", err)
	}
	sub, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		return fmt.Errorf("audit: migrate: %w", err)
	}
	if err := m.LoadMigrations(sub); err != nil {
		return fmt.Errorf("audit: migrate: load migrations: %w", err)
	}
	current, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return fmt.Errorf("audit: migrate: read version: %w", err)
	}
	if int(current) >= len(m.Migrations) {
		return nil
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("audit: migrate: %w", err)
	}
	return nil
}

// migrateWith runs Migrate on a connection taken out of pool for good, so
// that no session state of the migration outlives it.
func migrateWith(ctx context.Context, pool *pgxpool.Pool) error {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("audit: open: %w", err)
	}
	conn := c.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	return Migrate(ctx, conn)
}
