package postgres_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/keystore/postgres"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
)

// migrationCount is the number of files in migrations/.
const migrationCount = 3

func TestConformance(t *testing.T) {
	keystoretest.Exercise(t, func(t *testing.T) keystore.Store {
		return postgrestest.NewStore(t)
	})
}

func TestReplicas(t *testing.T) {
	keystoretest.ExerciseReplicas(t, func(t *testing.T) (keystore.Store, keystore.Store) {
		url := postgrestest.NewDatabase(t)
		return open(t, url), open(t, url)
	})
}

// testContext returns a context for one test that ends with it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// open opens a Store on url and closes it when the test ends.
func open(t *testing.T, url string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(testContext(t), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// connect connects to url directly and closes the connection when the test
// ends.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testContext(t), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// schemaVersion returns the version recorded in the migration table and the
// number of rows in it.
func schemaVersion(t *testing.T, conn *pgx.Conn) (version, rows int) {
	t.Helper()
	err := conn.QueryRow(testContext(t), `SELECT max(version), count(*) FROM sigil_schema_version`).Scan(&version, &rows)
	if err != nil {
		t.Fatalf("read schema version: %v", err)
	}
	return version, rows
}

func aesKey(name string) keystore.Key {
	return keystore.Key{Name: name, Purpose: keystore.PurposeEncryptDecrypt, Algorithm: keystore.AES256GCM}
}

func TestSecondStoreSeesWrites(t *testing.T) {
	ctx := testContext(t)
	url := postgrestest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	k, _, err := a.CreateKey(ctx, aesKey("shared"), []byte("hsm-1"))
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, _, err := b.CommitVersion(ctx, k.ID, 1, nil, true); err != nil {
		t.Fatalf("CommitVersion on the second store: %v", err)
	}
	got, err := a.GetKey(ctx, "shared")
	if err != nil || got.PrimaryVersion != 1 {
		t.Fatalf("GetKey on the first store = %+v, %v; want primary version 1", got, err)
	}
	// Version numbers come from the database, not from either process.
	va, err := a.AddVersion(ctx, k.ID, []byte("hsm-2"))
	if err != nil {
		t.Fatal(err)
	}
	vb, err := b.AddVersion(ctx, k.ID, []byte("hsm-3"))
	if err != nil {
		t.Fatal(err)
	}
	if va.Version != 2 || vb.Version != 3 {
		t.Errorf("AddVersion on two stores = %d, %d; want 2, 3", va.Version, vb.Version)
	}
	_, _, err = b.CreateKey(ctx, aesKey("shared"), []byte("hsm-4"))
	if !errors.Is(err, keystore.ErrExists) {
		t.Errorf("CreateKey of a name taken through the other store: %v, want ErrExists", err)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := testContext(t)
	url := postgrestest.NewDatabase(t)
	a := open(t, url)
	if _, _, err := a.CreateKey(ctx, aesKey("before"), []byte{1}); err != nil {
		t.Fatal(err)
	}
	b := open(t, url) // migrates again: nothing to do
	if _, err := b.GetKey(ctx, "before"); err != nil {
		t.Errorf("GetKey after a second Open: %v", err)
	}
	conn := connect(t, url)
	if err := postgres.Migrate(ctx, conn); err != nil {
		t.Fatalf("Migrate on a migrated database: %v", err)
	}
	if v, rows := schemaVersion(t, conn); v != migrationCount || rows != 1 {
		t.Errorf("schema version %d in %d rows, want %d in 1", v, rows, migrationCount)
	}
	// Migrate released its advisory lock: another session can take it.
	other := connect(t, url)
	var locked bool
	if err := other.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(0x536967696c4b4d53)).Scan(&locked); err != nil || !locked {
		t.Errorf("migration lock still held after Migrate: %v, %v", locked, err)
	}
}

func TestMigrateNewerSchema(t *testing.T) {
	ctx := testContext(t)
	url := postgrestest.NewDatabase(t)
	open(t, url)
	conn := connect(t, url)
	// A later release has applied a migration this one does not know.
	if _, err := conn.Exec(ctx, `UPDATE sigil_schema_version SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	s := open(t, url)
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if v, _ := schemaVersion(t, conn); v != migrationCount+1 {
		t.Errorf("schema version %d after Open, want %d left alone", v, migrationCount+1)
	}
}

func TestConcurrentOpen(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	ctx := testContext(t)
	const n = 4
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			s, err := postgres.Open(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = s.Ping(ctx)
			s.Close()
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
	if v, rows := schemaVersion(t, connect(t, url)); v != migrationCount || rows != 1 {
		t.Errorf("schema version %d in %d rows, want %d in 1", v, rows, migrationCount)
	}
}

func TestUnavailableAfterDatabaseLost(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	s := open(t, url)
	if _, _, err := s.CreateKey(testContext(t), aesKey("lost"), []byte{1}); err != nil {
		t.Fatal(err)
	}
	postgrestest.DropDatabase(t, url) // terminates the store's connections

	// Well within the deadline: failing fast is the point.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := s.Ping(ctx)
	t.Logf("Ping: %v", err)
	if !errors.Is(err, keystore.ErrUnavailable) || ctx.Err() != nil {
		t.Errorf("Ping after the database was dropped: %v, want ErrUnavailable before the deadline", err)
	}
	_, err = s.GetKey(ctx, "lost")
	t.Logf("GetKey: %v", err)
	if !errors.Is(err, keystore.ErrUnavailable) || ctx.Err() != nil {
		t.Errorf("GetKey after the database was dropped: %v, want ErrUnavailable before the deadline", err)
	}
	if strings.Contains(err.Error(), "SELECT") {
		t.Errorf("error text contains SQL: %v", err)
	}
}

func TestOpenErrorHidesPassword(t *testing.T) {
	const password = "s3cret-Pa55word"
	urls := map[string]string{
		"refused":  "postgres://sigil:" + password + "@127.0.0.1:1/sigil?sslmode=disable&connect_timeout=5",
		"bad port": "postgres://sigil:" + password + "@127.0.0.1:notaport/sigil",
		"bad url":  "postgres://sigil:" + password + "@[::1/sigil",
		"bad kv":   "host=127.0.0.1 password=" + password + " port=notaport",
		"kv":       "host=127.0.0.1 port=1 user=sigil password='" + password + "' dbname=sigil connect_timeout=5",
		// A password that also occurs in the error text: the database name.
		"no such database": "postgres://postgres:sigil_no_such_database@127.0.0.1:5432/sigil_no_such_database?sslmode=disable",
	}
	for name, url := range urls {
		t.Run(name, func(t *testing.T) {
			s, err := postgres.Open(testContext(t), url)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			t.Logf("Open: %v", err)
			for _, secret := range []string{password, "sigil_no_such_database"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Open error contains the password: %v", err)
				}
			}
		})
	}
}

func TestOpenUnreachableIsUnavailable(t *testing.T) {
	_, err := postgres.Open(testContext(t), "postgres://127.0.0.1:1/sigil?sslmode=disable&connect_timeout=5")
	if !errors.Is(err, keystore.ErrUnavailable) {
		t.Errorf("Open of an unreachable server: %v, want ErrUnavailable", err)
	}
}

func TestDeadlineWhileBlocked(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	s := open(t, url)
	k, _, err := s.CreateKey(testContext(t), aesKey("blocked"), []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	// Another session holds the key's row, so AddVersion must wait.
	conn := connect(t, url)
	tx, err := conn.Begin(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(testContext(t), `SELECT 1 FROM keys WHERE id = $1 FOR UPDATE`, k.ID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err = s.AddVersion(ctx, k.ID, []byte{2})
	t.Logf("AddVersion: %v", err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AddVersion past its deadline: %v, want DeadlineExceeded", err)
	}
	if err := tx.Rollback(testContext(t)); err != nil {
		t.Fatal(err)
	}
	// The store recovers, and the number was not handed out.
	v, err := s.AddVersion(testContext(t), k.ID, []byte{3})
	if err != nil || v.Version != 2 {
		t.Errorf("AddVersion after the lock is released = %d, %v; want 2", v.Version, err)
	}
}

func TestSchemaRejectsBadRows(t *testing.T) {
	ctx := testContext(t)
	s := postgrestest.NewStore(t)
	bad := map[string]keystore.Key{
		"name with space": aesKey("bad name"),
		"empty name":      aesKey(""),
		"long name":       aesKey(strings.Repeat("a", 64)),
		"non-ASCII name":  aesKey("clé"),
		"newline":         aesKey("a\n"),
		"bad purpose":     {Name: "p", Purpose: "DECRYPT_ONLY", Algorithm: keystore.AES256GCM},
	}
	for what, k := range bad {
		_, _, err := s.CreateKey(ctx, k, []byte(what))
		if err == nil {
			t.Errorf("CreateKey (%s) succeeded", what)
			continue
		}
		t.Logf("CreateKey (%s): %v", what, err)
		if errors.Is(err, keystore.ErrExists) || errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("CreateKey (%s): %v; want an internal error", what, err)
		}
	}
	if _, _, err := s.CreateKey(ctx, aesKey(strings.Repeat("a", 63)), []byte("ok")); err != nil {
		t.Errorf("CreateKey with a 63-byte name: %v", err)
	}
	if _, _, err := s.CreateKey(ctx, aesKey("x"), nil); err == nil {
		t.Error("CreateKey with an empty HSM ID succeeded")
	}
}

func TestNamesCompareBytewise(t *testing.T) {
	// ListKeys pages by name, so the column's collation must be bytewise
	// whatever the database's default is (the Memory store sorts bytewise).
	url := postgrestest.NewDatabase(t)
	open(t, url)
	var collation string
	err := connect(t, url).QueryRow(testContext(t), `
		SELECT collation_name FROM information_schema.columns
		WHERE table_name = 'keys' AND column_name = 'name'`).Scan(&collation)
	if err != nil || collation != "C" {
		t.Errorf("keys.name collation = %q, %v; want C", collation, err)
	}
}
