// Package postgrestest gives tests a fresh PostgreSQL database each.
//
// The server is found through $SIGIL_TEST_DATABASE_URL, a URL for a role
// allowed to create databases; it defaults to DefaultAdminURL. If the server
// cannot be reached, tests are skipped, unless SIGIL_TEST_REQUIRE=1, when
// they fail instead (set it in CI so that a missing database is noticed).
package postgrestest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/keystore/postgres"
)

// DefaultAdminURL is the admin URL used when $SIGIL_TEST_DATABASE_URL is
// not set.
const DefaultAdminURL = "postgres://127.0.0.1:5432/postgres?sslmode=disable"

// setupTimeout bounds creating and dropping a database, and connectTimeout
// the first connection to the server.
const (
	setupTimeout   = 30 * time.Second
	connectTimeout = 10 * time.Second
)

// AdminURL returns the URL of the admin connection: $SIGIL_TEST_DATABASE_URL
// or DefaultAdminURL.
func AdminURL() string {
	if u := os.Getenv("SIGIL_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultAdminURL
}

// NewDatabase creates an empty database with a random name
// (sigil_test_<hex>) and returns its URL. The database is dropped, with any
// connections still open to it, when the test ends. NewDatabase skips the
// test if the server cannot be reached, or fails it if SIGIL_TEST_REQUIRE=1.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	admin := AdminURL()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()

	conn, err := connectAdmin(ctx, admin)
	if err != nil {
		msg := "postgrestest: cannot reach PostgreSQL at " + redacted(admin) + " (set SIGIL_TEST_DATABASE_URL): " + err.Error()
		if os.Getenv("SIGIL_TEST_REQUIRE") == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg + "; skipping (SIGIL_TEST_REQUIRE=1 makes this fatal)")
	}
	defer conn.Close(ctx)

	name := "sigil_test_" + randomHex(tb, 8)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("postgrestest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() { dropDatabase(tb, admin, name) })

	u, err := withDatabase(admin, name)
	if err != nil {
		tb.Fatalf("postgrestest: %v", err)
	}
	return u
}

// unreachable remembers, per admin URL, why the server could not be
// reached, so that once it has failed every later test skips at once
// instead of waiting for its own connection attempt to time out.
var unreachable sync.Map // admin URL -> error

// connectAdmin connects to admin, failing at once if an earlier attempt in
// this process did.
func connectAdmin(ctx context.Context, admin string) (*pgx.Conn, error) {
	if err, ok := unreachable.Load(admin); ok {
		return nil, err.(error)
	}
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		unreachable.Store(admin, err)
		return nil, err
	}
	return conn, nil
}

// NewStore opens a postgres.Store on a new database (see NewDatabase) and
// closes it when the test ends.
func NewStore(tb testing.TB) *postgres.Store {
	tb.Helper()
	u := NewDatabase(tb)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	s, err := postgres.Open(ctx, u)
	if err != nil {
		tb.Fatalf("postgrestest: open store: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// DropDatabase drops the database that url (as returned by NewDatabase)
// names, terminating its connections, while the test is still running. Use
// it to simulate losing the database.
func DropDatabase(tb testing.TB, url string) {
	tb.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		tb.Fatalf("postgrestest: parse database URL: %v", err)
	}
	if !strings.HasPrefix(cfg.Database, "sigil_test_") {
		tb.Fatalf("postgrestest: refusing to drop %q, which NewDatabase did not create", cfg.Database)
	}
	dropDatabase(tb, AdminURL(), cfg.Database)
}

// dropDatabase drops the database name if it exists, with FORCE.
func dropDatabase(tb testing.TB, admin, name string) {
	tb.Helper()
	// The test's own context is already cancelled during cleanup.
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		tb.Errorf("postgrestest: drop database %s: connect: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		tb.Errorf("postgrestest: drop database %s: %v", name, err)
	}
}

// withDatabase returns the connection string admin with its database
// replaced by name. It accepts URLs and key=value strings.
func withDatabase(admin, name string) (string, error) {
	if strings.HasPrefix(admin, "postgres://") || strings.HasPrefix(admin, "postgresql://") {
		u, err := url.Parse(admin)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// In a key=value string a later key overrides an earlier one.
	return admin + " dbname=" + name, nil
}

// redacted returns the connection string s with any password masked, for
// messages.
func redacted(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(the configured connection string)"
}

// randomHex returns n random bytes in hex.
func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("postgrestest: random name: %v", err)
	}
	return hex.EncodeToString(b)
}
