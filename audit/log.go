package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// Log is an append-only, hash-chained audit log.
type Log interface {
	// Append adds r to the log, setting its Seq, Time, PrevHash and Hash
	// (see Seal), and returns once the record is durable. It returns an
	// error wrapping ErrUnavailable if the record could not be written,
	// and the context's error if ctx ended first; in that case the record
	// may still be written later. On any error the caller must fail the
	// request it describes and return no result.
	Append(ctx context.Context, r Record) error
	// Close writes what is still queued, then stops the log. Later
	// Appends fail with ErrClosed.
	Close() error
}

// RecordAppender is implemented by Logs that can return the record as they
// wrote it, with Seq, Time, PrevHash and Hash set. Tee uses it.
type RecordAppender interface {
	// AppendRecord is Append, also returning the record written.
	AppendRecord(ctx context.Context, r Record) (Record, error)
}

// appendRecord appends r to log and returns the record written, or r as
// given if log does not implement RecordAppender.
func appendRecord(ctx context.Context, log Log, r Record) (Record, error) {
	if ra, ok := log.(RecordAppender); ok {
		return ra.AppendRecord(ctx, r)
	}
	if err := log.Append(ctx, r); err != nil {
		return Record{}, err
	}
	return r, nil
}

// Tee returns a Log that appends to log and then writes each record that
// log accepted to w, as one JSON line (see Record.MarshalJSON), for a SIEM
// or other collector. If log implements RecordAppender the line carries
// Seq, Time and the hashes, so the collector's copy can later anchor the
// chain; otherwise it carries the record as given to Append.
//
// The Log is safe for concurrent use: each line is written with one Write
// call, and lines never interleave. Lines of records appended concurrently
// may come out of seq order. If writing to w fails, Append returns an error
// wrapping ErrUnavailable although the record is already in log: a
// configured copy is part of the audit trail, so the request fails closed.
// Close closes log, not w.
func Tee(log Log, w io.Writer) Log {
	return &tee{log: log, w: w}
}

// tee is the Log returned by Tee.
type tee struct {
	log Log
	mu  sync.Mutex // serialises writes to w
	w   io.Writer
}

var (
	_ Log            = (*tee)(nil)
	_ RecordAppender = (*tee)(nil)
)

// Append appends r to the inner Log, then writes it to w.
func (t *tee) Append(ctx context.Context, r Record) error {
	_, err := t.AppendRecord(ctx, r)
	return err
}

// AppendRecord appends r to the inner Log, then writes it to w.
func (t *tee) AppendRecord(ctx context.Context, r Record) (Record, error) {
	rec, err := appendRecord(ctx, t.log, r)
	if err != nil {
		return Record{}, err
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return Record{}, fmt.Errorf("audit: tee: %w: %w", ErrUnavailable, err)
	}
	line = append(line, '\n')
	// A reader that stops reading must not hold the request past its
	// deadline: the write goes on in the background and the caller fails.
	done := make(chan error, 1)
	go func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		_, err := t.w.Write(line)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return Record{}, fmt.Errorf("audit: tee: %w: %w", ErrUnavailable, err)
		}
		return rec, nil
	case <-ctx.Done():
		return Record{}, fmt.Errorf("audit: tee: %w: the output stalled: %w", ErrUnavailable, ctx.Err())
	}
}

// Close closes the inner Log.
func (t *tee) Close() error {
	return t.log.Close()
}
