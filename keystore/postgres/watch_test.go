package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/postgres"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
)

// watchStarted runs s.Watch in a goroutine until the test ends, and returns
// once Watch is listening, with the channel that receives its result.
func watchStarted(t *testing.T, ctx context.Context, s *postgres.Store) <-chan error {
	t.Helper()
	listening := make(chan struct{}, 1)
	result := make(chan error, 1)
	go func() {
		result <- s.Watch(ctx, func(id [16]byte) {
			if id == ([16]byte{}) {
				select {
				case listening <- struct{}{}:
				default:
				}
			}
		})
	}()
	select {
	case <-listening:
	case err := <-result:
		t.Fatalf("Watch returned before listening: %v", err)
	case <-ctx.Done():
		t.Fatal("Watch did not start listening")
	}
	return result
}

func TestWatchReleasesConnection(t *testing.T) {
	s := open(t, postgrestest.NewDatabase(t))
	ctx, cancel := context.WithCancel(testContext(t))
	result := watchStarted(t, ctx, s)
	if n := postgres.AcquiredConns(s); n != 0 {
		t.Errorf("%d pooled connections in use while watching; Watch's own should be out of the pool", n)
	}
	cancel()
	if err := <-result; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch after cancel: %v, want Canceled", err)
	}
	if n := postgres.AcquiredConns(s); n != 0 {
		t.Errorf("%d pooled connections in use after Watch returned, want 0", n)
	}
}

func TestWatchUnavailableWhenDatabaseLost(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	s := open(t, url)
	result := watchStarted(t, testContext(t), s)
	postgrestest.DropDatabase(t, url) // terminates the listening session
	select {
	case err := <-result:
		t.Logf("Watch: %v", err)
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("Watch after the database was dropped: %v, want ErrUnavailable", err)
		}
	case <-testContext(t).Done():
		t.Fatal("Watch did not return after the database was dropped")
	}
}

func TestWatchIgnoresOtherPayloads(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	s := open(t, url)
	ctx := testContext(t)
	ids := make(chan [16]byte, 16)
	result := make(chan error, 1)
	go func() { result <- s.Watch(ctx, func(id [16]byte) { ids <- id }) }()
	if id := <-ids; id != ([16]byte{}) {
		t.Fatalf("first report %x, want zero", id)
	}
	if _, err := connect(t, url).Exec(ctx, `SELECT pg_notify('sigil_keys', 'not a uuid')`); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-ids:
		if id != ([16]byte{}) {
			t.Errorf("a payload that is not a key ID was reported as %x, want the zero ID", id)
		}
	case err := <-result:
		t.Fatalf("Watch returned: %v", err)
	case <-ctx.Done():
		t.Fatal("no report for a foreign payload")
	}
}

func TestRunExclusiveReleasesLock(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	// fn's context ends while it holds the lock; the lock is still
	// released, and the connection given back.
	ctx, cancel := context.WithCancel(testContext(t))
	ran, err := a.RunExclusive(ctx, "job", func(ctx context.Context) error {
		cancel()
		return ctx.Err()
	})
	if !ran || !errors.Is(err, context.Canceled) {
		t.Errorf("RunExclusive = %t, %v; want true, fn's error", ran, err)
	}
	if n := postgres.AcquiredConns(a); n != 0 {
		t.Errorf("%d pooled connections in use after RunExclusive, want 0", n)
	}
	ran, err = b.RunExclusive(testContext(t), "job", func(context.Context) error { return nil })
	if !ran || err != nil {
		t.Errorf("RunExclusive on another store after the first ended = %t, %v; want true, nil", ran, err)
	}
	// No advisory lock is left behind.
	var locks int
	err = connect(t, url).QueryRow(testContext(t), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'`).Scan(&locks)
	if err != nil || locks != 0 {
		t.Errorf("%d advisory locks held after RunExclusive, %v; want 0", locks, err)
	}
}

func TestRunExclusivePanicReleasesLock(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	func() {
		defer func() { _ = recover() }()
		_, _ = a.RunExclusive(testContext(t), "job", func(context.Context) error { panic("boom") })
	}()
	ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second)
	defer cancel()
	if ran, err := b.RunExclusive(ctx, "job", func(context.Context) error { return nil }); !ran || err != nil {
		t.Errorf("RunExclusive after a panicking holder = %t, %v; want true, nil", ran, err)
	}
}
