// Package audittest is a conformance suite that every audit.Log
// implementation runs, so that the in-memory Log used by other packages'
// tests behaves like the PostgreSQL one. Its functions are safe to call from
// parallel tests.
package audittest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/audit"
)

// Subject is a Log under test and a way to read back what it stored.
type Subject struct {
	// Log is the Log under test. The suite closes it.
	Log audit.Log
	// Records returns every stored record in seq order, read from the
	// Log's storage rather than from memory of what was appended.
	Records func(t testing.TB) []audit.Record
}

// Open opens a new, empty Log whose records take their Time from now.
type Open func(t *testing.T, now func() time.Time) Subject

// timeout bounds each test of the suite.
const timeout = 30 * time.Second

// Run runs the suite, opening a fresh Log for each test with open.
func Run(t *testing.T, open Open) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open) })
	t.Run("Normalize", func(t *testing.T) { testNormalize(t, open) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open) })
	t.Run("CancelledContext", func(t *testing.T) { testCancelled(t, open) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, open) })
}

// fixedClock returns a clock that starts at a fixed instant with a
// sub-microsecond part and advances by 1.5µs per call.
func fixedClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(1500 * time.Nanosecond)
		return t
	}
}

// Sample returns a record with every caller-set field filled in, numbered
// i.
func Sample(i int) audit.Record {
	return audit.Record{
		RequestID:  fmt.Sprintf("req-%04d", i),
		Identity:   "spiffe://example.org/ns/payments/sa/api",
		RPC:        "sigil.v1.KeyManagementService/Encrypt",
		Key:        fmt.Sprintf("key-%d", i%7),
		KeyVersion: uint32(i%3 + 1),
		Outcome:    audit.OutcomeOK,
		Peer:       "10.1.2.3:45678",
		Details: map[string]string{
			audit.DetailAADHMAC: audit.HMAC([]byte("salt"), fmt.Appendf(nil, "ad-%d", i)),
			"note":              "é \"quoted\" <tag> & \u2028",
		},
		// Set by the Log; these values must be overwritten.
		Seq:      999,
		PrevHash: []byte("junk"),
		Hash:     []byte("junk"),
	}
}

// VerifyAll checks that records form one valid chain of n records.
func VerifyAll(t testing.TB, records []audit.Record, n int) {
	t.Helper()
	checked, bad, err := audit.Verify(context.Background(), audit.Each(records))
	if err != nil || bad != 0 || checked != int64(n) {
		t.Fatalf("Verify = (%d, %d, %v), want (%d, 0, nil)", checked, bad, err, n)
	}
}

// closeLog closes s.Log when the test ends, failing the test on an error.
func closeLog(t *testing.T, s Subject) {
	t.Cleanup(func() {
		if err := s.Log.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

func testRoundTrip(t *testing.T, open Open) {
	clock := fixedClock()
	var mu sync.Mutex
	var times []time.Time
	s := open(t, func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now := clock()
		times = append(times, now)
		return now
	})
	closeLog(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var returned []audit.Record
	for i := range 3 {
		in := Sample(i)
		if i == 2 {
			in.Details = nil
			in.Outcome = "permission_denied"
			in.KeyVersion = 0
			in.Identity = ""
		}
		if ra, ok := s.Log.(audit.RecordAppender); ok {
			rec, err := ra.AppendRecord(ctx, in)
			if err != nil {
				t.Fatalf("AppendRecord %d: %v", i, err)
			}
			returned = append(returned, rec)
		} else if err := s.Log.Append(ctx, in); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	got := s.Records(t)
	if len(got) != 3 {
		t.Fatalf("stored %d records, want 3", len(got))
	}
	VerifyAll(t, got, 3)
	for i, r := range got {
		want := Sample(i)
		if i == 2 {
			want.Details = nil
			want.Outcome = "permission_denied"
			want.KeyVersion = 0
			want.Identity = ""
		}
		if r.Seq != int64(i+1) {
			t.Errorf("record %d: Seq %d", i, r.Seq)
		}
		if wantTime := times[i].UTC().Truncate(time.Microsecond); !r.Time.Equal(wantTime) || r.Time.Location() != time.UTC {
			t.Errorf("record %d: Time %v, want %v in UTC", i, r.Time, wantTime)
		}
		if r.RequestID != want.RequestID || r.Identity != want.Identity || r.RPC != want.RPC ||
			r.Key != want.Key || r.KeyVersion != want.KeyVersion || r.Outcome != want.Outcome ||
			r.Peer != want.Peer || !maps.Equal(r.Details, want.Details) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, r, want)
		}
		if returned != nil && !equal(returned[i], r) {
			t.Errorf("record %d: AppendRecord returned\n%+v\nbut stored\n%+v", i, returned[i], r)
		}
	}
}

func testNormalize(t *testing.T, open Open) {
	s := open(t, nil)
	closeLog(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	in := Sample(1)
	in.Key = "bad\x00name\xff"
	in.RequestID = strings.Repeat("r", audit.MaxFieldBytes+10)
	in.Details = map[string]string{"k\x00": "v\xc3"}
	if err := s.Log.Append(ctx, in); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := s.Log.Append(ctx, Sample(2)); err != nil {
		t.Fatalf("Append: %v", err)
	}
	got := s.Records(t)
	VerifyAll(t, got, 2)
	want := audit.Normalize(in)
	if got[0].Key != "bad\uFFFDname\uFFFD" || got[0].RequestID != want.RequestID ||
		len(got[0].RequestID) != audit.MaxFieldBytes || !maps.Equal(got[0].Details, map[string]string{"k\uFFFD": "v\uFFFD"}) {
		t.Errorf("stored %+v, want the normalized %+v", got[0], want)
	}
}

func testConcurrent(t *testing.T, open Open) {
	s := open(t, nil)
	closeLog(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	const n = 100
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs <- s.Log.Append(ctx, Sample(i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	got := s.Records(t)
	VerifyAll(t, got, n)
	seen := map[string]bool{}
	for _, r := range got {
		if seen[r.RequestID] {
			t.Errorf("request %s recorded twice", r.RequestID)
		}
		seen[r.RequestID] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct requests recorded, want %d", len(seen), n)
	}
}

func testCancelled(t *testing.T, open Open) {
	s := open(t, nil)
	closeLog(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Log.Append(ctx, Sample(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context = %v, want context.Canceled", err)
	}
}

func testClosed(t *testing.T, open Open) {
	s := open(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.Log.Append(ctx, Sample(1)); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := s.Log.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err := s.Log.Append(ctx, Sample(2))
	if !errors.Is(err, audit.ErrUnavailable) || !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrUnavailable and ErrClosed", err)
	}
	if err := s.Log.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	got := s.Records(t)
	VerifyAll(t, got, 1)
}

// equal reports whether a and b are the same record.
func equal(a, b audit.Record) bool {
	return a.Seq == b.Seq && a.Time.Equal(b.Time) && a.RequestID == b.RequestID &&
		a.Identity == b.Identity && a.RPC == b.RPC && a.Key == b.Key &&
		a.KeyVersion == b.KeyVersion && a.Outcome == b.Outcome && a.Peer == b.Peer &&
		maps.Equal(a.Details, b.Details) && string(a.PrevHash) == string(b.PrevHash) &&
		string(a.Hash) == string(b.Hash)
}
