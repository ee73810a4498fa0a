package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// errInjected is the cause Memory reports after Fail(nil).
var errInjected = errors.New("injected failure")

// Memory is a Log that keeps its chain in memory, for tests of the code
// that writes audit records. Fail and Stall inject faults. A Memory is safe
// for concurrent use; records are chained in the order Appends take its
// lock, and each is "durable" as soon as Append returns.
type Memory struct {
	now func() time.Time

	mu      sync.Mutex
	records []Record
	fail    error         // non-nil: Appends fail with it
	stall   chan struct{} // non-nil: Appends wait until it is closed
	closed  bool
}

var (
	_ Log            = (*Memory)(nil)
	_ RecordAppender = (*Memory)(nil)
)

// NewMemory returns an empty Memory whose records take their Time from now,
// or from time.Now if now is nil.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now}
}

// Append adds r to the chain.
func (m *Memory) Append(ctx context.Context, r Record) error {
	_, err := m.AppendRecord(ctx, r)
	return err
}

// AppendRecord adds r to the chain and returns the record as stored. While
// the Memory is stalled it waits, honouring ctx; after Fail it returns an
// error wrapping ErrUnavailable and the injected error; after Close, one
// wrapping ErrUnavailable and ErrClosed.
func (m *Memory) AppendRecord(ctx context.Context, r Record) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	m.mu.Lock()
	for m.stall != nil && !m.closed {
		stall := m.stall
		m.mu.Unlock()
		select {
		case <-stall:
		case <-ctx.Done():
			return Record{}, ctx.Err()
		}
		m.mu.Lock()
	}
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return Record{}, fmt.Errorf("audit: memory: %w: %w", ErrUnavailable, ErrClosed)
	case m.fail != nil:
		return Record{}, fmt.Errorf("audit: memory: %w: %w", ErrUnavailable, m.fail)
	}
	var head Head
	if n := len(m.records); n > 0 {
		head = Head{Seq: m.records[n-1].Seq, Hash: m.records[n-1].Hash}
	}
	r.Time = m.now()
	rec := Seal(r, head)
	m.records = append(m.records, rec)
	return rec.Clone(), nil
}

// Fail makes every later Append fail, with an error wrapping ErrUnavailable
// and err (or a generic injected error if err is nil), until Recover.
func (m *Memory) Fail(err error) {
	if err == nil {
		err = errInjected
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

// Stall makes every later Append wait, until Recover or Close or until its
// context ends, as if storage had stopped answering.
func (m *Memory) Stall() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stall == nil {
		m.stall = make(chan struct{})
	}
}

// Recover undoes Fail and Stall; stalled Appends go on.
func (m *Memory) Recover() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = nil
	m.release()
}

// release ends a stall. m.mu must be held.
func (m *Memory) release() {
	if m.stall != nil {
		close(m.stall)
		m.stall = nil
	}
}

// Records returns a copy of every record, in seq order.
func (m *Memory) Records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Record, len(m.records))
	for i, r := range m.records {
		out[i] = r.Clone()
	}
	return out
}

// Len returns the number of records.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.records)
}

// Verify checks the chain held in memory, as the package function Verify.
func (m *Memory) Verify(ctx context.Context) (checked, firstBad int64, err error) {
	return Verify(ctx, Each(m.Records()))
}

// Close makes later Appends fail with ErrClosed and releases stalled ones,
// which then fail too. The records stay readable.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.release()
	return nil
}
