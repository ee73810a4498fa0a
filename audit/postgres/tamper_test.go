package postgres_test

import (
	"errors"
	"testing"

	"github.com/sigil-kms/sigil/audit"
	"github.com/sigil-kms/sigil/audit/audittest"
	"github.com/sigil-kms/sigil/audit/postgres"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
)

// TestTamper edits the stored log in SQL, one change at a time, and checks
// that Verify names the row: the edited one, or for a row deleted (or moved
// away by changing its seq) the row after the gap.
func TestTamper(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	l := openLog(t, url, postgres.Options{})
	ctx := testContext(t)
	const n, k = 10, 5
	for i := range n {
		if err := l.Append(ctx, audittest.Sample(i)); err != nil {
			t.Fatal(err)
		}
	}
	mustVerify(t, l, url, n)
	conn := connect(t, url)
	if _, err := conn.Exec(ctx, `CREATE TABLE pristine AS SELECT * FROM audit_log`); err != nil {
		t.Fatal(err)
	}
	rows := readAll(t, url)
	rehashed := rows[k-1]
	rehashed.Identity = "mallory"
	rehashed.Hash = audit.ComputeHash(rehashed)

	edits := []struct {
		name string
		sql  string
		args []any
		bad  int64 // 0: the edit goes unnoticed (a limit of any unkeyed chain)
		// checked is how many records pass before the bad one.
		checked int64
	}{
		{"identity", `UPDATE audit_log SET identity = 'mallory' WHERE seq = 5`, nil, k, k - 1},
		{"request_id", `UPDATE audit_log SET request_id = 'other' WHERE seq = 5`, nil, k, k - 1},
		{"rpc", `UPDATE audit_log SET rpc = 'sigil.v1.KeyManagementService/Decrypt' WHERE seq = 5`, nil, k, k - 1},
		{"key", `UPDATE audit_log SET "key" = 'other' WHERE seq = 5`, nil, k, k - 1},
		{"key_version", `UPDATE audit_log SET key_version = key_version + 1 WHERE seq = 5`, nil, k, k - 1},
		{"outcome", `UPDATE audit_log SET outcome = 'permission_denied' WHERE seq = 5`, nil, k, k - 1},
		{"peer", `UPDATE audit_log SET peer = '192.0.2.1:1' WHERE seq = 5`, nil, k, k - 1},
		{"time", `UPDATE audit_log SET "time" = "time" + interval '1 microsecond' WHERE seq = 5`, nil, k, k - 1},
		{"details value", `UPDATE audit_log SET details = jsonb_set(details, '{aad_hmac}', '"00"') WHERE seq = 5`, nil, k, k - 1},
		{"details added", `UPDATE audit_log SET details = details || '{"x": "y"}' WHERE seq = 5`, nil, k, k - 1},
		{"details emptied", `UPDATE audit_log SET details = '{}' WHERE seq = 5`, nil, k, k - 1},
		{"prev_hash", `UPDATE audit_log SET prev_hash = set_byte(prev_hash, 0, get_byte(prev_hash, 0) # 1) WHERE seq = 5`, nil, k, k - 1},
		{"hash", `UPDATE audit_log SET hash = set_byte(hash, 31, get_byte(hash, 31) # 1) WHERE seq = 5`, nil, k, k - 1},
		{"first row", `UPDATE audit_log SET outcome = 'internal' WHERE seq = 1`, nil, 1, 0},
		{"last row", `UPDATE audit_log SET outcome = 'internal' WHERE seq = 10`, nil, n, n - 1},
		{"rehashed", `UPDATE audit_log SET identity = $1, hash = $2 WHERE seq = 5`, []any{rehashed.Identity, rehashed.Hash}, k + 1, k},
		{"deleted", `DELETE FROM audit_log WHERE seq = 5`, nil, k + 1, k - 1},
		{"first deleted", `DELETE FROM audit_log WHERE seq = 1`, nil, 2, 0},
		{"seq moved", `UPDATE audit_log SET seq = 1000 WHERE seq = 5`, nil, k + 1, k - 1},
		{"last deleted", `DELETE FROM audit_log WHERE seq = 10`, nil, 0, n - 1},
		// Rows that no longer decode, once the constraints are gone.
		{"details not strings", `ALTER TABLE audit_log DROP CONSTRAINT audit_log_details_check;
			UPDATE audit_log SET details = '{"aad_hmac": 1}' WHERE seq = 5`, nil, k, k - 1},
		{"details an array", `UPDATE audit_log SET details = '[]' WHERE seq = 5`, nil, k, k - 1},
		{"key_version negative", `ALTER TABLE audit_log DROP CONSTRAINT audit_log_key_version_check;
			UPDATE audit_log SET key_version = -1 WHERE seq = 5`, nil, k, k - 1},
		{"null", `ALTER TABLE audit_log ALTER COLUMN identity DROP NOT NULL;
			UPDATE audit_log SET identity = NULL WHERE seq = 5`, nil, k, k - 1},
		{"time infinite", `UPDATE audit_log SET "time" = 'infinity' WHERE seq = 5`, nil, k, k - 1},
	}
	for _, e := range edits {
		t.Run(e.name, func(t *testing.T) {
			ctx := testContext(t)
			if _, err := conn.Exec(ctx, e.sql, e.args...); err != nil {
				t.Fatalf("edit: %v", err)
			}
			defer func() {
				if _, err := conn.Exec(ctx, `DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM pristine`); err != nil {
					t.Fatalf("restore: %v", err)
				}
				mustVerify(t, l, url, n)
			}()
			for name, verify := range map[string]func() (int64, int64, error){
				"Verify":         func() (int64, int64, error) { return l.Verify(ctx) },
				"VerifyDatabase": func() (int64, int64, error) { return postgres.VerifyDatabase(ctx, url) },
			} {
				checked, bad, err := verify()
				var be *audit.BreakError
				switch {
				case e.bad == 0 && (err != nil || bad != 0 || checked != e.checked):
					t.Errorf("%s = (%d, %d, %v), want the edit unnoticed", name, checked, bad, err)
				case e.bad != 0 && (bad != e.bad || !errors.As(err, &be) || be.Seq != e.bad || checked != e.checked):
					t.Errorf("%s = (%d, %d, %v), want first bad %d", name, checked, bad, err, e.bad)
				case err != nil:
					t.Logf("%s: %v", name, err)
				}
			}
		})
	}
}
