// Package postgres implements audit.Log on PostgreSQL with pgx, writing
// records in groups: many concurrent Appends share one transaction, so the
// audit log does not cap the request rate.
//
// Open connects, applies the audit log's own embedded migrations (table
// audit_log, version table sigil_audit_schema_version) and starts the Log's
// writer goroutine. Append queues its record and waits; the writer takes
// everything queued, up to Options.MaxBatch records, and writes it in one
// transaction that holds a transaction-level advisory lock on the chain,
// seals the records after the chain's head (see audit.Seal) and inserts
// them. While the writer knows the head, because it wrote it, the lock and
// the insert go in one round trip; if another writer got there first, the
// primary key on seq refuses the batch and the writer reads the head under
// the lock and writes the batch again. Several Logs on one database, in one
// process or in several replicas, therefore interleave whole batches but
// never fork the chain.
// When the transaction commits every Append of the batch returns nil; when
// it fails they all return the same error, wrapping audit.ErrUnavailable.
//
// All methods of Log are safe for concurrent use, Close included.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sigil-kms/sigil/audit"
)

var (
	_ audit.Log            = (*Log)(nil)
	_ audit.RecordAppender = (*Log)(nil)
)

// Defaults of Options.
const (
	DefaultMaxBatch     = 256
	DefaultWriteTimeout = 10 * time.Second
)

// cleanupTimeout bounds closing connections and releasing locks once the
// caller's context may already have ended.
const cleanupTimeout = 5 * time.Second

// Options configure a Log. The zero value is usable.
type Options struct {
	// MaxBatch is the most records written in one transaction;
	// DefaultMaxBatch if 0 or less.
	MaxBatch int
	// Now is the clock that sets each record's Time when Append is
	// called; time.Now if nil.
	Now func() time.Time
	// WriteTimeout bounds one batch's transaction, so that a database
	// that stops answering fails the waiting Appends instead of holding
	// them; DefaultWriteTimeout if 0 or less.
	WriteTimeout time.Duration
	// Observe, if set, is called by the writer after each transaction
	// with its number of records, its duration and its error, for
	// metrics. It must return quickly.
	Observe func(records int, d time.Duration, err error)
}

// hooks let tests observe the writer. Both are nil outside tests.
type hooks struct {
	enqueued func()      // after an Append queued its record
	taken    func(n int) // after the writer took n records, before writing them
	closing  func()      // after Close stopped accepting records
}

// Log is an audit.Log on a PostgreSQL database. Create one with Open.
type Log struct {
	pool         *pgxpool.Pool
	password     string // masked out of error texts
	maxBatch     int
	now          func() time.Time
	writeTimeout time.Duration
	observe      func(int, time.Duration, error)
	hooks        hooks

	mu     sync.Mutex
	queue  []*pending
	closed bool

	wake     chan struct{} // capacity 1: something was queued
	stop     chan struct{} // closed by Close
	done     chan struct{} // closed when the writer has stopped
	closeErr error         // written by the writer before done is closed

	// Used by the writer goroutine only.
	head  knownHead // the chain's head as last written or read
	pause int       // batches left to send through the locked path

	batches, records, failedBatches, failedRecords, staleHeads atomic.Int64
}

// pending is one queued Append.
type pending struct {
	rec  audit.Record
	done chan struct{} // closed once out or err is set
	out  audit.Record
	err  error
}

// Stats counts the Log's work since Open, for metrics and tests.
type Stats struct {
	// Batches and Records count committed transactions and the records
	// they wrote.
	Batches, Records int64
	// FailedBatches and FailedRecords count transactions that failed and
	// the records whose Appends therefore failed.
	FailedBatches, FailedRecords int64
	// StaleHeads counts batches whose one-round-trip write found that
	// another writer had extended the chain, and that were written again
	// after reading the head.
	StaleHeads int64
}

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string, as pgx accepts), applies any pending audit log
// migrations and starts the Log. It returns an error wrapping
// audit.ErrUnavailable if the database cannot be reached or migrated. Error texts never
// contain the password. Call Close when done.
func Open(ctx context.Context, url string, opts Options) (*Log, error) {
	return open(ctx, url, opts, hooks{})
}

func open(ctx context.Context, url string, opts Options, h hooks) (*Log, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the URL, password included.
		return nil, errors.New("audit: open: cannot parse the database URL")
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "sigil-audit"
	}
	l := &Log{
		password:     cfg.ConnConfig.Password,
		maxBatch:     opts.MaxBatch,
		now:          opts.Now,
		writeTimeout: opts.WriteTimeout,
		observe:      opts.Observe,
		hooks:        h,
		wake:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
	}
	if l.maxBatch <= 0 {
		l.maxBatch = DefaultMaxBatch
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.writeTimeout <= 0 {
		l.writeTimeout = DefaultWriteTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, l.unavailable("open", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, l.unavailable("open", err)
	}
	if err := migrateWith(ctx, pool); err != nil {
		pool.Close()
		return nil, l.unavailable("open", err)
	}
	l.pool = pool
	go l.run()
	return l, nil
}

// Append adds r to the chain and returns once it is committed; see
// AppendRecord.
func (l *Log) Append(ctx context.Context, r audit.Record) error {
	_, err := l.AppendRecord(ctx, r)
	return err
}

// AppendRecord sets r.Time from the clock, queues r for the writer, waits
// until the batch holding it commits and returns the record as written.
// It returns an error wrapping audit.ErrUnavailable if the batch failed or
// the Log is closed (then also audit.ErrClosed). If ctx ends first it
// returns ctx's error at once; the record stays queued and may still be
// written, and the caller must treat the request as failed all the same.
// Likewise, if the connection fails while committing, the batch's Appends
// fail although the records may have been committed: an error means "not
// known to be durable", never "certainly not written".
func (l *Log) AppendRecord(ctx context.Context, r audit.Record) (audit.Record, error) {
	if err := ctx.Err(); err != nil {
		return audit.Record{}, err
	}
	r.Time = l.now()
	p := &pending{rec: r, done: make(chan struct{})}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return audit.Record{}, fmt.Errorf("audit: append: %w: %w", audit.ErrUnavailable, audit.ErrClosed)
	}
	l.queue = append(l.queue, p)
	l.mu.Unlock()
	if l.hooks.enqueued != nil {
		l.hooks.enqueued()
	}
	select {
	case l.wake <- struct{}{}:
	default: // the writer is already due to look at the queue
	}
	select {
	case <-p.done:
		return p.out, p.err
	case <-ctx.Done():
		return audit.Record{}, fmt.Errorf("audit: append: %w (the record may still be written)", ctx.Err())
	}
}

// Close stops accepting records, waits until everything queued has been
// written (or has failed), stops the writer and closes the connections. It
// returns the error of the last batch if that failed. Appends still waiting
// get their batch's result; later ones fail with audit.ErrClosed. Close may
// be called more than once.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	if l.hooks.closing != nil {
		l.hooks.closing()
	}
	close(l.stop)
	<-l.done
	l.pool.Close()
	return l.closeErr
}

// Stats returns the Log's counters.
func (l *Log) Stats() Stats {
	return Stats{
		Batches:       l.batches.Load(),
		Records:       l.records.Load(),
		FailedBatches: l.failedBatches.Load(),
		FailedRecords: l.failedRecords.Load(),
		StaleHeads:    l.staleHeads.Load(),
	}
}

// mask returns s with the password replaced by xxxxx.
func (l *Log) mask(s string) string {
	if l.password == "" {
		return s
	}
	return strings.ReplaceAll(s, l.password, "xxxxx")
}

// unavailable returns an error wrapping audit.ErrUnavailable, and nothing
// else, whose text names op and gives err's text with the password masked.
// The cause is kept as text only: a timeout of the writer's own context must
// not read as the caller's deadline.
func (l *Log) unavailable(op string, err error) error {
	return &unavailableError{text: fmt.Sprintf("audit: %s: %v: %s", op, audit.ErrUnavailable, l.mask(err.Error()))}
}

// unavailableError is the error of a failed write. It wraps
// audit.ErrUnavailable.
type unavailableError struct{ text string }

func (e *unavailableError) Error() string { return e.text }
func (e *unavailableError) Unwrap() error { return audit.ErrUnavailable }
