package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sigil-kms/sigil/audit"
)

// selectSQL reads the whole log in seq order. Every column that someone
// editing the table could make NULL or out of range is read in a form that
// can hold that, so that such a row is reported as broken, not as a failure
// to read.
const selectSQL = `SELECT seq, "time", request_id, identity, rpc, "key", key_version, outcome,
	peer, details::text, prev_hash, hash
FROM audit_log ORDER BY seq`

// querier is what Verify needs of a pool or a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Verify checks the whole chain stored in the database, streaming the rows
// in seq order in one snapshot (see audit.Verify): checked is the number of
// records that passed, firstBad the seq of the first broken record (0 if
// none), and err a *audit.BreakError if the chain is broken, or the error
// that stopped reading. A row that cannot be decoded into a Record (a NULL,
// details that are not an object of strings, a key_version out of range)
// is broken too. Appends may go on meanwhile; Verify sees the chain as it
// was when it started.
func (l *Log) Verify(ctx context.Context) (checked, firstBad int64, err error) {
	checked, firstBad, err = verify(ctx, l.pool)
	return checked, firstBad, l.maskError(err)
}

// VerifyDatabase is Log.Verify on the database at url, without opening a
// Log or migrating anything: the check behind `sigil audit verify`. It needs
// only SELECT on audit_log.
func VerifyDatabase(ctx context.Context, url string) (checked, firstBad int64, err error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return 0, 0, errors.New("audit: verify: cannot parse the database URL")
	}
	l := &Log{password: cfg.Password}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, 0, l.unavailable("verify", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	checked, firstBad, err = verify(ctx, conn)
	return checked, firstBad, l.maskError(err)
}

// maskError returns err, or if its text holds the password, an error with
// the text masked that wraps only the audit or context sentinel err wraps.
func (l *Log) maskError(err error) error {
	if err == nil || l.password == "" || l.mask(err.Error()) == err.Error() {
		return err
	}
	var be *audit.BreakError
	if errors.As(err, &be) {
		return err // built from row contents, never from the URL
	}
	for _, s := range []error{ErrNoAuditLog, audit.ErrUnavailable, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, s) {
			return fmt.Errorf("%s: %w", l.mask(err.Error()), s)
		}
	}
	return errors.New(l.mask(err.Error()))
}

// ErrNoAuditLog means the database has no audit_log table: it is not
// sigild's database, or sigild never ran on it.
var ErrNoAuditLog = errors.New("audit: the database has no audit_log table")

// undefinedTable is the SQLSTATE of a query naming a missing table.
const undefinedTable = "42P01"

// readError wraps an error from reading the log, as ErrNoAuditLog if the
// table is missing.
func readError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == undefinedTable {
		return fmt.Errorf("%w: %w", ErrNoAuditLog, err)
	}
	return fmt.Errorf("audit: verify: %w", err)
}

// verify streams the log from q and checks it.
func verify(ctx context.Context, q querier) (checked, firstBad int64, err error) {
	rows, err := q.Query(ctx, selectSQL)
	if err != nil {
		return 0, 0, readError(err)
	}
	defer rows.Close()
	v := audit.NewVerifier()
	for rows.Next() {
		r, reason, err := scanRecord(rows)
		if err != nil {
			return v.Checked(), 0, fmt.Errorf("audit: verify: %w", err)
		}
		if reason != "" {
			err = v.Fail(r.Seq, reason)
		} else {
			err = v.Check(r)
		}
		if err != nil {
			return v.Checked(), err.(*audit.BreakError).Seq, err
		}
	}
	if err := rows.Err(); err != nil {
		return v.Checked(), 0, readError(err)
	}
	return v.Checked(), 0, nil
}

// scanRecord reads a row of selectSQL. If the row cannot be a Record it
// returns the row's seq and a reason, and err only if reading failed.
func scanRecord(rows pgx.Rows) (r audit.Record, reason string, err error) {
	var (
		t                                         pgtype.Timestamptz
		rid, ident, rpc, key, outcome, peer, dets pgtype.Text
		kv                                        pgtype.Int8
	)
	if err := rows.Scan(&r.Seq, &t, &rid, &ident, &rpc, &key, &kv, &outcome, &peer, &dets,
		&r.PrevHash, &r.Hash); err != nil {
		return r, "", err
	}
	for _, s := range []pgtype.Text{rid, ident, rpc, key, outcome, peer, dets} {
		if !s.Valid {
			return r, "a column is NULL", nil
		}
	}
	if !t.Valid || t.InfinityModifier != pgtype.Finite {
		return r, "time is NULL or infinite", nil
	}
	if !kv.Valid || kv.Int64 < 0 || kv.Int64 > math.MaxUint32 {
		return r, "key_version is NULL or out of range", nil
	}
	if err := json.Unmarshal([]byte(dets.String), &r.Details); err != nil {
		return r, "details are not an object of strings", nil
	}
	if len(r.Details) == 0 {
		r.Details = nil
	}
	r.Time = t.Time.UTC()
	r.RequestID, r.Identity, r.RPC, r.Key = rid.String, ident.String, rpc.String, key.String
	r.KeyVersion = uint32(kv.Int64)
	r.Outcome, r.Peer = outcome.String, peer.String
	return r, "", nil
}
