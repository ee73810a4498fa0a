package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/audit"
	"github.com/sigil-kms/sigil/audit/audittest"
	"github.com/sigil-kms/sigil/audit/postgres"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
)

// promptly bounds how long a failing Append may take.
const promptly = 5 * time.Second

// stalled is a Log whose writer can be held at the chain's advisory lock.
type stalled struct {
	*postgres.Log
	url      string
	lock     *pgx.Conn
	enqueued chan struct{}
	taken    chan int
	closing  chan struct{}
}

// openStalled opens a Log with hooks, holding the chain lock from another
// connection so that its first batch waits; call release to let it go.
func openStalled(t *testing.T, opts postgres.Options) *stalled {
	t.Helper()
	url := postgrestest.NewDatabase(t)
	s := &stalled{url: url, enqueued: make(chan struct{}, 10000), taken: make(chan int, 10000), closing: make(chan struct{})}
	l, err := postgres.OpenWithHooks(testContext(t), url, opts, postgres.Hooks{
		Enqueued: func() { s.enqueued <- struct{}{} },
		Taken:    func(n int) { s.taken <- n },
		Closing:  func() { close(s.closing) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	s.Log = l
	s.lock = connect(t, url)
	if _, err := s.lock.Exec(testContext(t), "SELECT pg_advisory_lock($1)", postgres.ChainLock); err != nil {
		t.Fatal(err)
	}
	return s
}

// release lets the writer take the chain lock.
func (s *stalled) release(t *testing.T) {
	t.Helper()
	if _, err := s.lock.Exec(testContext(t), "SELECT pg_advisory_unlock($1)", postgres.ChainLock); err != nil {
		t.Fatal(err)
	}
}

// queue starts n Appends with ctx, the first alone in a batch that waits at
// the lock, the others queued behind it, and returns their results.
func (s *stalled) queue(t *testing.T, ctx context.Context, n int) <-chan error {
	t.Helper()
	errs := make(chan error, n)
	go func() { errs <- s.Append(ctx, audittest.Sample(0)) }()
	if got := <-s.taken; got != 1 {
		t.Fatalf("first batch has %d records", got)
	}
	<-s.enqueued
	for i := 1; i < n; i++ {
		go func() { errs <- s.Append(ctx, audittest.Sample(i)) }()
	}
	for i := 1; i < n; i++ {
		<-s.enqueued
	}
	return errs
}

// TestInsertFails makes every insert fail and checks that every waiting
// Append of every batch fails promptly with ErrUnavailable, and that the
// chain continues, without a gap, once inserts work again.
func TestInsertFails(t *testing.T) {
	s := openStalled(t, postgres.Options{})
	conn := connect(t, s.url)
	if _, err := conn.Exec(testContext(t), `ALTER TABLE audit_log ADD CONSTRAINT block CHECK (false) NOT VALID`); err != nil {
		t.Fatal(err)
	}
	const n = 50
	ctx, cancel := context.WithTimeout(context.Background(), promptly)
	defer cancel()
	start := time.Now()
	errs := s.queue(t, ctx, n)
	s.release(t)
	for range n {
		if err := <-errs; !errors.Is(err, audit.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Append = %v, want ErrUnavailable", err)
		}
	}
	t.Logf("%d Appends failed in %v", n, time.Since(start))
	if st := s.Stats(); st.FailedBatches != 2 || st.FailedRecords != n || st.Records != 0 {
		t.Errorf("Stats = %+v, want %d records failed in 2 batches", st, n)
	}

	if _, err := conn.Exec(testContext(t), `ALTER TABLE audit_log DROP CONSTRAINT block`); err != nil {
		t.Fatal(err)
	}
	appendConcurrently(t, s, 10, 0)
	mustVerify(t, s.Log, s.url, 10)
}

// TestWriteTimeout checks that a database that stops answering (here, a
// writer that cannot get the chain lock) fails Appends after WriteTimeout,
// even when their own contexts would wait longer.
func TestWriteTimeout(t *testing.T) {
	s := openStalled(t, postgres.Options{WriteTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), promptly)
	defer cancel()
	errs := s.queue(t, ctx, 3)
	for range 3 {
		if err := <-errs; !errors.Is(err, audit.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Append = %v, want ErrUnavailable only", err)
		}
	}
	s.release(t)
	appendConcurrently(t, s, 3, 0)
	mustVerify(t, s.Log, s.url, 3)
}

// TestDatabaseGone drops the database under a Log.
func TestDatabaseGone(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	l := openLog(t, url, postgres.Options{})
	appendConcurrently(t, l, 5, 0)
	postgrestest.DropDatabase(t, url)

	const n = 20
	ctx, cancel := context.WithTimeout(context.Background(), promptly)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := l.Append(ctx, audittest.Sample(i)); !errors.Is(err, audit.ErrUnavailable) {
				t.Errorf("Append after the database was dropped = %v, want ErrUnavailable", err)
			}
		})
	}
	wg.Wait()
	t.Logf("%d Appends failed in %v", n, time.Since(start))
	if _, _, err := l.Verify(testContext(t)); err == nil {
		t.Error("Verify without a database succeeded")
	}
}

// TestAppendCancelled checks that Append returns when its context ends, even
// though the record stays queued, and that the record is then written.
func TestAppendCancelled(t *testing.T) {
	s := openStalled(t, postgres.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	errs := s.queue(t, ctx, 2)
	cancel()
	for range 2 {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("Append = %v, want Canceled", err)
		}
	}
	s.release(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(readAll(t, s.url)); got != 2 {
		t.Fatalf("%d records written after the callers gave up, want 2 (they stay queued)", got)
	}
}

// TestCloseFlushes closes a Log with records queued and checks that Close
// writes them and that their Appends succeed.
func TestCloseFlushes(t *testing.T) {
	s := openStalled(t, postgres.Options{MaxBatch: 16})
	const n = 40
	errs := s.queue(t, testContext(t), n)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	<-s.closing
	if err := s.Append(testContext(t), audittest.Sample(n)); !errors.Is(err, audit.ErrClosed) || !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Append during Close = %v, want ErrClosed and ErrUnavailable", err)
	}
	s.release(t)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	if got := len(readAll(t, s.url)); got != n {
		t.Fatalf("%d records after Close, want %d", got, n)
	}
	checked, bad, err := postgres.VerifyDatabase(testContext(t), s.url)
	if err != nil || bad != 0 || checked != n {
		t.Fatalf("VerifyDatabase = (%d, %d, %v)", checked, bad, err)
	}
}

// TestCloseFailing closes a Log whose queued records cannot be written:
// Close fails them all at once and reports the error.
func TestCloseFailing(t *testing.T) {
	s := openStalled(t, postgres.Options{MaxBatch: 4})
	if _, err := connect(t, s.url).Exec(testContext(t), `ALTER TABLE audit_log RENAME TO gone`); err != nil {
		t.Fatal(err)
	}
	const n = 20
	errs := s.queue(t, testContext(t), n)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	<-s.closing
	s.release(t)
	if err := <-closed; !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Close = %v, want ErrUnavailable", err)
	}
	for range n {
		if err := <-errs; !errors.Is(err, audit.ErrUnavailable) {
			t.Fatalf("Append = %v, want ErrUnavailable", err)
		}
	}
	if st := s.Stats(); st.FailedRecords != n || st.Records != 0 {
		t.Errorf("Stats = %+v, want all %d records failed", st, n)
	}
}
