package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

// migrationsFS holds the numbered SQL migrations, applied in order.
//
//go:embed migrations/*.sql
var migrationsFS embed.FS

// versionTable is the table in which tern records the applied migration.
const versionTable = "sigil_schema_version"

// migrationLock is the key of the session-level advisory lock held while
// migrating, so that replicas starting together migrate one after another
// and each later one finds nothing left to do. tern's Migrator also takes an
// advisory lock of its own (around creating its version table, and around
// reading the version and applying migrations); this one does not rely on
// that detail and also covers the version check below.
const migrationLock int64 = 0x5369_6769_6c4b_4d53 // "SigilKMS"

// unlockTimeout bounds releasing the advisory lock once the caller's context
// may already have ended.
const unlockTimeout = 5 * time.Second

// Migrate brings the schema in conn's database up to date, applying the
// embedded migrations not yet recorded in the sigil_schema_version table.
// Tables are created in the first schema of conn's search_path. It holds an
// advisory lock while it works, so concurrent callers on the same database
// migrate exactly once between them. A database already migrated beyond the
// embedded migrations (by a newer release) is left as it is.
//
// Migrate is used by Open; call it directly only to migrate without opening
// a Store. If it fails, close conn: the connection may be in a failed state.
func Migrate(ctx context.Context, conn *pgx.Conn) (err error) {
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return translate(ctx, "migrate: lock", err)
	}
	defer func() {
		// Unlock even if ctx has ended, or the lock would outlive this
		// call on a connection the caller may keep.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		_, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrationLock)
		if err == nil && uerr != nil {
			err = translate(uctx, "migrate: unlock", uerr)
		}
	}()

	m, err := migrate.NewMigrator(ctx, conn, versionTable)
	if err != nil {
		return translate(ctx, "migrate: prepare", err)
	}
	sub, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		return fmt.Errorf("keystore: migrate: %w", err)
	}
	if err := m.LoadMigrations(sub); err != nil {
		return fmt.Errorf("keystore: migrate: load migrations: %w", err)
	}
	current, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return translate(ctx, "migrate: read version", err)
	}
	if int(current) >= len(m.Migrations) {
		// Up to date, or migrated by a newer release: migrations are
		// additive, so this release still works on that schema, and tern
		// would otherwise try to migrate down or refuse.
		return nil
	}
	if err := m.Migrate(ctx); err != nil {
		return translate(ctx, "migrate", err)
	}
	return nil
}
