package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/audit"
	"github.com/sigil-kms/sigil/audit/audittest"
)

func TestMemoryConformance(t *testing.T) {
	audittest.Run(t, func(t *testing.T, now func() time.Time) audittest.Subject {
		m := audit.NewMemory(now)
		return audittest.Subject{Log: m, Records: func(testing.TB) []audit.Record { return m.Records() }}
	})
}

func TestTeeConformance(t *testing.T) {
	audittest.Run(t, func(t *testing.T, now func() time.Time) audittest.Subject {
		m := audit.NewMemory(now)
		return audittest.Subject{Log: audit.Tee(m, &bytes.Buffer{}), Records: func(testing.TB) []audit.Record { return m.Records() }}
	})
}

func TestMemoryFail(t *testing.T) {
	ctx := context.Background()
	m := audit.NewMemory(nil)
	boom := errors.New("disk on fire")
	m.Fail(boom)
	err := m.Append(ctx, audittest.Sample(1))
	if !errors.Is(err, audit.ErrUnavailable) || !errors.Is(err, boom) {
		t.Fatalf("Append after Fail = %v", err)
	}
	m.Fail(nil)
	if err := m.Append(ctx, audittest.Sample(1)); !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Append after Fail(nil) = %v", err)
	}
	m.Recover()
	if err := m.Append(ctx, audittest.Sample(2)); err != nil {
		t.Fatalf("Append after Recover = %v", err)
	}
	if checked, bad, err := m.Verify(ctx); checked != 1 || bad != 0 || err != nil {
		t.Fatalf("Verify = (%d, %d, %v)", checked, bad, err)
	}
}

func TestMemoryStall(t *testing.T) {
	m := audit.NewMemory(nil)
	m.Stall()

	// A stalled Append honours its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.Append(ctx, audittest.Sample(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled Append = %v, want DeadlineExceeded", err)
	}

	// Recover lets stalled Appends through.
	done := make(chan error)
	go func() { done <- m.Append(context.Background(), audittest.Sample(2)) }()
	m.Recover()
	if err := <-done; err != nil {
		t.Fatalf("Append released by Recover = %v", err)
	}

	// Close releases stalled Appends, which then fail.
	m.Stall()
	go func() { done <- m.Append(context.Background(), audittest.Sample(3)) }()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("Append released by Close = %v, want ErrClosed", err)
	}
	if m.Len() != 1 {
		t.Fatalf("%d records, want 1", m.Len())
	}
}

func TestTeeLines(t *testing.T) {
	ctx := context.Background()
	m := audit.NewMemory(nil)
	var buf bytes.Buffer
	log := audit.Tee(m, &buf)
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := log.Append(ctx, audittest.Sample(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	// One line per record, each the record as stored, hashes included.
	stored := map[int64]audit.Record{}
	for _, r := range m.Records() {
		stored[r.Seq] = r
	}
	sc := bufio.NewScanner(&buf)
	lines := 0
	for sc.Scan() {
		lines++
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d: %v", lines, err)
		}
		want, ok := stored[r.Seq]
		if !ok || string(r.Hash) != string(want.Hash) || r.RequestID != want.RequestID {
			t.Fatalf("line %d is %+v, stored %+v", lines, r, want)
		}
		delete(stored, r.Seq)
	}
	if lines != n || len(stored) != 0 {
		t.Fatalf("%d lines, %d records not written", lines, len(stored))
	}

	// A failed Append writes nothing.
	m.Fail(nil)
	if err := log.Append(ctx, audittest.Sample(1)); !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Append = %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("failed Append wrote %q", buf.String())
	}
}

// failWriter fails every Write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestTeeWriteFails(t *testing.T) {
	m := audit.NewMemory(nil)
	log := audit.Tee(m, failWriter{})
	if err := log.Append(context.Background(), audittest.Sample(1)); !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Append with a failing writer = %v, want ErrUnavailable", err)
	}
}

// appendOnly is a Log that does not implement RecordAppender.
type appendOnly struct{ audit.Log }

func TestTeePlainLog(t *testing.T) {
	var buf bytes.Buffer
	log := audit.Tee(appendOnly{audit.NewMemory(nil)}, &buf)
	if err := log.Append(context.Background(), audittest.Sample(7)); err != nil {
		t.Fatal(err)
	}
	var r audit.Record
	if err := json.Unmarshal(buf.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.RequestID != audittest.Sample(7).RequestID {
		t.Fatalf("line %+v", r)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
}
