package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sigil-kms/sigil/audit"
)

// chainLock is the key of the transaction-level advisory lock that every
// writer, in every process, holds from reading the chain's head until its
// batch commits.
const chainLock int64 = 0x5369_6769_6c43_6861 // "SigilCha"

// uniqueViolation is the SQLSTATE of a unique constraint refusing a row, and
// seqConstraint the primary key on audit_log.seq.
const (
	uniqueViolation = "23505"
	seqConstraint   = "audit_log_pkey"
)

// headSQL reads the chain's head. Run after taking chainLock in a READ
// COMMITTED transaction, its snapshot includes every batch committed before.
const headSQL = `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`

// insertSQL inserts a batch in one statement, one array per column.
const insertSQL = `INSERT INTO audit_log
	(seq, "time", request_id, identity, rpc, "key", key_version, outcome, peer, details, prev_hash, hash)
SELECT seq, t, rid, ident, rpc, k, kv, oc, peer, d::jsonb, ph, h
FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
	$7::bigint[], $8::text[], $9::text[], $10::text[], $11::bytea[], $12::bytea[])
	AS u(seq, t, rid, ident, rpc, k, kv, oc, peer, d, ph, h)`

// run is the writer goroutine: it writes batches while records are queued,
// and once Close has been called writes what is left and returns.
func (l *Log) run() {
	defer close(l.done)
	for {
		select {
		case <-l.wake:
		case <-l.stop:
		}
		for {
			batch, closing := l.take()
			if len(batch) == 0 {
				if closing {
					return
				}
				break
			}
			if err := l.flush(batch); err != nil && closing {
				// The database is failing and nobody will wait
				// for a retry: fail the rest at once.
				l.closeErr = err
				for {
					rest, _ := l.take()
					if len(rest) == 0 {
						return
					}
					l.failedRecords.Add(int64(len(rest)))
					l.finish(rest, nil, err)
				}
			}
		}
	}
}

// take removes up to maxBatch records from the queue and returns them, and
// whether the Log is closing.
func (l *Log) take() ([]*pending, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := min(len(l.queue), l.maxBatch)
	if n == 0 {
		return nil, l.closed
	}
	batch := make([]*pending, n)
	copy(batch, l.queue)
	rest := copy(l.queue, l.queue[n:])
	clear(l.queue[rest:]) // drop references for the garbage collector
	l.queue = l.queue[:rest]
	if l.hooks.taken != nil {
		l.hooks.taken(n)
	}
	return batch, l.closed
}

// flush writes batch in one transaction and wakes its Appends.
func (l *Log) flush(batch []*pending) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.writeTimeout)
	defer cancel()
	start := time.Now()
	sealed, err := l.write(ctx, batch)
	if l.observe != nil {
		l.observe(len(batch), time.Since(start), err)
	}
	if err != nil {
		err = l.unavailable(fmt.Sprintf("write %d records", len(batch)), err)
		l.failedBatches.Add(1)
		l.failedRecords.Add(int64(len(batch)))
	} else {
		l.batches.Add(1)
		l.records.Add(int64(len(batch)))
	}
	l.finish(batch, sealed, err)
	return err
}

// finish gives each pending Append its sealed record, or err.
func (l *Log) finish(batch []*pending, sealed []audit.Record, err error) {
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.out = sealed[i]
		}
		close(p.done)
	}
}

// optimisticPause is how many batches the writer sends through the locked
// path after its cached head turned out stale, so that replicas writing at
// the same time do not keep paying for failed attempts.
const optimisticPause = 8

// write seals batch after the chain's head and inserts it, and returns the
// sealed records once they are committed.
//
// When the writer knows the head (it wrote it, or read it) it sends the lock
// and the insert in one round trip, as one implicit transaction. If another
// writer extended the chain since, the insert's first seq is taken: the
// primary key refuses it, nothing is written, and the batch goes through
// the locked path, which reads the head first. Either way no two records
// share a seq and each record chains to the one before it.
func (l *Log) write(ctx context.Context, batch []*pending) ([]audit.Record, error) {
	if l.head.known && l.pause == 0 {
		sealed, args, err := seal(batch, l.head.Head)
		if err != nil {
			return nil, err
		}
		b := &pgx.Batch{}
		b.Queue("SELECT pg_advisory_xact_lock($1)", chainLock)
		b.Queue(insertSQL, args...)
		err = l.pool.SendBatch(ctx, b).Close()
		if err == nil {
			l.head.set(sealed[len(sealed)-1])
			return sealed, nil
		}
		l.head.known = false
		if !seqTaken(err) {
			return nil, err
		}
		l.staleHeads.Add(1)
		l.pause = optimisticPause
	} else if l.pause > 0 {
		l.pause--
	}
	sealed, err := l.writeLocked(ctx, batch)
	if err != nil {
		return nil, err
	}
	l.head.set(sealed[len(sealed)-1])
	return sealed, nil
}

// writeLocked takes the chain's lock, reads the head, seals batch after it
// and inserts it, all in one transaction.
func (l *Log) writeLocked(ctx context.Context, batch []*pending) ([]audit.Record, error) {
	tx, err := l.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}) // the head read after the lock must see the latest commit
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(ctx) }() // no-op after Commit

	// Lock, then read the head: two statements, so that the head's
	// snapshot is taken after the lock is held. One round trip.
	var head audit.Head
	b := &pgx.Batch{}
	b.Queue("SELECT pg_advisory_xact_lock($1)", chainLock)
	b.Queue(headSQL).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&head.Seq, &head.Hash)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // empty chain
		}
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	sealed, args, err := seal(batch, head)
	if err != nil {
		return nil, err
	}
	tag, err := tx.Exec(ctx, insertSQL, args...)
	if err != nil {
		return nil, err
	}
	if n := len(batch); tag.RowsAffected() != int64(n) {
		return nil, fmt.Errorf("inserted %d rows, want %d", tag.RowsAffected(), n)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return sealed, nil
}

// seal seals batch after head and returns the records and insertSQL's
// arguments.
func seal(batch []*pending, head audit.Head) ([]audit.Record, []any, error) {
	n := len(batch)
	sealed := make([]audit.Record, n)
	var (
		seqs     = make([]int64, n)
		times    = make([]time.Time, n)
		rids     = make([]string, n)
		idents   = make([]string, n)
		rpcs     = make([]string, n)
		keys     = make([]string, n)
		versions = make([]int64, n)
		outcomes = make([]string, n)
		peers    = make([]string, n)
		details  = make([]string, n)
		prevs    = make([][]byte, n)
		hashes   = make([][]byte, n)
	)
	for i, p := range batch {
		r := audit.Seal(p.rec, head)
		head = audit.Head{Seq: r.Seq, Hash: r.Hash}
		d, err := json.Marshal(r.Details)
		if err != nil {
			return nil, nil, err
		}
		if r.Details == nil {
			d = []byte("{}")
		}
		sealed[i] = r
		seqs[i], times[i], rids[i], idents[i] = r.Seq, r.Time, r.RequestID, r.Identity
		rpcs[i], keys[i], versions[i], outcomes[i] = r.RPC, r.Key, int64(r.KeyVersion), r.Outcome
		peers[i], details[i], prevs[i], hashes[i] = r.Peer, string(d), r.PrevHash, r.Hash
	}
	return sealed, []any{seqs, times, rids, idents, rpcs, keys, versions, outcomes, peers, details, prevs, hashes}, nil
}

// knownHead is the chain's head as the writer last wrote or read it.
type knownHead struct {
	audit.Head
	known bool
}

func (h *knownHead) set(last audit.Record) {
	h.Head, h.known = audit.Head{Seq: last.Seq, Hash: last.Hash}, true
}

// seqTaken reports whether err is the primary key on seq refusing a record:
// another writer extended the chain first.
func seqTaken(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == uniqueViolation && pe.ConstraintName == seqConstraint
}
