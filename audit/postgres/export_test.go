package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/audit"
)

// ChainLock is the advisory lock key writers hold; tests hold it to stall
// every writer.
const ChainLock = chainLock

// Hooks are called by a Log opened with OpenWithHooks: Enqueued after each
// Append queues its record, Taken after the writer takes n records, before
// writing them (with the Log's lock held: it must not call the Log), and
// Closing once Close has stopped accepting records. Nil hooks are skipped.
type Hooks struct {
	Enqueued func()
	Taken    func(n int)
	Closing  func()
}

// OpenWithHooks is Open with hooks for tests.
func OpenWithHooks(ctx context.Context, url string, opts Options, h Hooks) (*Log, error) {
	return open(ctx, url, opts, hooks{enqueued: h.Enqueued, taken: h.Taken, closing: h.Closing})
}

// ReadAll reads every record stored in conn's database, in seq order.
func ReadAll(ctx context.Context, conn *pgx.Conn) ([]audit.Record, error) {
	rows, err := conn.Query(ctx, selectSQL)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		r, _, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
