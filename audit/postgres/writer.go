package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/audit"
)

// chainLock is the key of the transaction-level advisory lock that every
// writer, in every process, holds from reading the chain's head until its
// batch commits.
const chainLock int64 = 0x5369_6769_6c43_6861 // "SigilCha"

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
	sealed, err := l.write(ctx, batch)
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

// write seals batch after the chain's head and inserts it, all in one
// transaction, and returns the sealed records once it has committed.
func (l *Log) write(ctx context.Context, batch []*pending) ([]audit.Record, error) {
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
			return nil, err
		}
		if r.Details == nil {
			d = []byte("{}")
		}
		sealed[i] = r
		seqs[i], times[i], rids[i], idents[i] = r.Seq, r.Time, r.RequestID, r.Identity
		rpcs[i], keys[i], versions[i], outcomes[i] = r.RPC, r.Key, int64(r.KeyVersion), r.Outcome
		peers[i], details[i], prevs[i], hashes[i] = r.Peer, string(d), r.PrevHash, r.Hash
	}
	tag, err := tx.Exec(ctx, insertSQL, seqs, times, rids, idents, rpcs, keys, versions,
		outcomes, peers, details, prevs, hashes)
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() != int64(n) {
		return nil, fmt.Errorf("inserted %d rows, want %d", tag.RowsAffected(), n)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return sealed, nil
}
