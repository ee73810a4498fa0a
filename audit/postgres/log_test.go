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
	keystorepg "github.com/sigil-kms/sigil/keystore/postgres"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
)

// testTimeout bounds each test's work on the database.
const testTimeout = 60 * time.Second

// testContext returns a context that ends with the test or after
// testTimeout.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// openLog opens a Log on url and closes it when the test ends.
func openLog(t testing.TB, url string, opts postgres.Options) *postgres.Log {
	t.Helper()
	l, err := postgres.Open(testContext(t), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// connect opens a plain connection to url, closed when the test ends.
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testContext(t), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// readAll reads every stored record from the database at url.
func readAll(t testing.TB, url string) []audit.Record {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	rs, err := postgres.ReadAll(ctx, conn)
	if err != nil {
		t.Fatalf("read records: %v", err)
	}
	return rs
}

// appendConcurrently appends n sample records from n goroutines and marks
// the test failed if any Append fails. It may run outside the test's
// goroutine.
func appendConcurrently(t testing.TB, l audit.Log, n, offset int) {
	t.Helper()
	ctx := testContext(t)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs <- l.Append(ctx, audittest.Sample(offset+i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Append: %v", err)
			return
		}
	}
}

// mustVerify checks the stored chain with both Log.Verify and
// VerifyDatabase, and that it holds n records.
func mustVerify(t testing.TB, l *postgres.Log, url string, n int64) {
	t.Helper()
	checked, bad, err := l.Verify(testContext(t))
	if err != nil || bad != 0 || checked != n {
		t.Fatalf("Verify = (%d, %d, %v), want (%d, 0, nil)", checked, bad, err, n)
	}
	checked, bad, err = postgres.VerifyDatabase(testContext(t), url)
	if err != nil || bad != 0 || checked != n {
		t.Fatalf("VerifyDatabase = (%d, %d, %v), want (%d, 0, nil)", checked, bad, err, n)
	}
}

func TestConformance(t *testing.T) {
	audittest.Run(t, func(t *testing.T, now func() time.Time) audittest.Subject {
		url := postgrestest.NewDatabase(t)
		l, err := postgres.Open(testContext(t), url, postgres.Options{Now: now})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return audittest.Subject{Log: l, Records: func(t testing.TB) []audit.Record { return readAll(t, url) }}
	})
}

// TestGrouping shows that concurrent Appends share transactions.
func TestGrouping(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	l := openLog(t, url, postgres.Options{})
	const n = 200
	appendConcurrently(t, l, n, 0)
	st := l.Stats()
	t.Logf("%d concurrent Appends: %d batches", n, st.Batches)
	if st.Records != n || st.Batches >= n/10 || st.FailedBatches != 0 {
		t.Errorf("Stats = %+v: want %d records in fewer than %d batches", st, n, n/10)
	}
	mustVerify(t, l, url, n)
}

// TestMaxBatch checks that no transaction writes more than MaxBatch records.
func TestMaxBatch(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	var mu sync.Mutex
	largest := 0
	l, err := postgres.OpenWithHooks(testContext(t), url, postgres.Options{MaxBatch: 7}, postgres.Hooks{Taken: func(n int) {
		mu.Lock()
		defer mu.Unlock()
		largest = max(largest, n)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	appendConcurrently(t, l, 100, 0)
	if st := l.Stats(); st.Batches < 100/7 || largest > 7 {
		t.Errorf("Stats = %+v, largest batch %d: want batches of at most 7", st, largest)
	}
	mustVerify(t, l, url, 100)
}

// TestThroughput measures 2000 concurrent Appends, and one Append at a time
// for comparison.
func TestThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	url := postgrestest.NewDatabase(t)
	l := openLog(t, url, postgres.Options{})
	ctx := testContext(t)

	const serial = 200
	start := time.Now()
	for i := range serial {
		if err := l.Append(ctx, audittest.Sample(i)); err != nil {
			t.Fatal(err)
		}
	}
	el := time.Since(start)
	t.Logf("serial: %d Appends in %v: %.0f records/s, %v per commit", serial, el, serial/el.Seconds(), el/serial)

	const n = 2000
	before := l.Stats()
	start = time.Now()
	appendConcurrently(t, l, n, serial)
	el = time.Since(start)
	st := l.Stats()
	t.Logf("concurrent: %d Appends in %v: %.0f records/s in %d batches (max batch %d)",
		n, el, n/el.Seconds(), st.Batches-before.Batches, postgres.DefaultMaxBatch)
	if st.Batches-before.Batches >= n/10 {
		t.Errorf("%d batches for %d concurrent records", st.Batches-before.Batches, n)
	}
	start = time.Now()
	mustVerify(t, l, url, serial+n)
	t.Logf("verify: %d records twice in %v", serial+n, time.Since(start))
}

// TestReplicas runs two Logs, as two replicas would, on one database.
func TestReplicas(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	a := openLog(t, url, postgres.Options{})
	b := openLog(t, url, postgres.Options{})
	const n = 200
	var wg sync.WaitGroup
	wg.Go(func() { appendConcurrently(t, a, n, 0) })
	wg.Go(func() { appendConcurrently(t, b, n, n) })
	wg.Wait()
	sa, sb := a.Stats(), b.Stats()
	t.Logf("replica a: %d records in %d batches; replica b: %d in %d", sa.Records, sa.Batches, sb.Records, sb.Batches)
	mustVerify(t, a, url, 2*n)
	seen := map[string]bool{}
	for _, r := range readAll(t, url) {
		seen[r.RequestID] = true
	}
	if len(seen) != 2*n {
		t.Errorf("%d distinct requests stored, want %d", len(seen), 2*n)
	}
}

// TestStaleHead has two Logs take turns, so that each one's known head is
// stale at its next write: the primary key must refuse the one-round-trip
// write and the Log must write the batch again after the real head.
func TestStaleHead(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	a := openLog(t, url, postgres.Options{})
	b := openLog(t, url, postgres.Options{})
	ctx := testContext(t)
	for i, l := range []*postgres.Log{a, b, a, b, a} {
		if err := l.Append(ctx, audittest.Sample(i)); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	// a wrote seq 1, 3 and 5: its one-round-trip write of seq 3 found
	// its head stale; seq 5 went through the locked path directly, as
	// the writer pauses its one-round-trip attempts after a stale head.
	if st := a.Stats(); st.StaleHeads != 1 || st.Records != 3 {
		t.Errorf("a.Stats() = %+v, want 3 records and 1 stale head", st)
	}
	if st := b.Stats(); st.StaleHeads != 1 || st.Records != 2 {
		t.Errorf("b.Stats() = %+v, want 2 records and 1 stale head", st)
	}
	mustVerify(t, a, url, 5)
	for i, r := range readAll(t, url) {
		if want := audittest.Sample(i).RequestID; r.RequestID != want || r.Seq != int64(i+1) {
			t.Errorf("record %d: seq %d request %q, want seq %d request %q", i, r.Seq, r.RequestID, i+1, want)
		}
	}
}

// TestOpenConcurrently opens several Logs and a key store at once on a new
// database: the migrations run once and keep separate version tables.
func TestOpenConcurrently(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			l, err := postgres.Open(testContext(t), url, postgres.Options{})
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			if err := l.Append(testContext(t), audittest.Sample(1)); err != nil {
				t.Errorf("Append: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Go(func() {
		s, err := keystorepg.Open(testContext(t), url)
		if err != nil {
			t.Errorf("keystore Open: %v", err)
			return
		}
		s.Close()
	})
	wg.Wait()
	conn := connect(t, url)
	var audits, keys int
	if err := conn.QueryRow(testContext(t), `SELECT
		(SELECT count(*) FROM sigil_audit_schema_version),
		(SELECT count(*) FROM sigil_schema_version)`).Scan(&audits, &keys); err != nil {
		t.Fatal(err)
	}
	if audits != 1 || keys != 1 {
		t.Errorf("version tables hold %d and %d rows", audits, keys)
	}
	l := openLog(t, url, postgres.Options{})
	mustVerify(t, l, url, 4)
}

func TestVerifyEmptyAndMissing(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	if _, _, err := postgres.VerifyDatabase(testContext(t), url); !errors.Is(err, postgres.ErrNoAuditLog) {
		t.Errorf("VerifyDatabase without an audit_log table = %v, want ErrNoAuditLog", err)
	}
	l := openLog(t, url, postgres.Options{})
	mustVerify(t, l, url, 0)
}

// BenchmarkAppendParallel measures Appends from many goroutines at once, as
// a busy server makes them.
func BenchmarkAppendParallel(b *testing.B) {
	url := postgrestest.NewDatabase(b)
	l := openLog(b, url, postgres.Options{})
	ctx := testContext(b)
	b.SetParallelism(64) // 64 × GOMAXPROCS goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := l.Append(ctx, audittest.Sample(i)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := l.Stats()
	b.ReportMetric(float64(st.Records)/float64(st.Batches), "records/batch")
}
