package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/audit"
	auditpg "github.com/sigil-kms/sigil/audit/postgres"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
)

// sigilEnv runs the CLI with the given environment and returns its exit
// code, stdout and stderr.
func sigilEnv(env map[string]string, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	c := &cli{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }}
	code := c.run(context.Background(), args)
	return code, out.String(), errOut.String()
}

func TestAuditVerify(t *testing.T) {
	ctx := context.Background()
	db := postgrestest.NewDatabase(t)
	env := map[string]string{"SIGIL_DATABASE_URL": db}

	// Before sigild ever ran there is no audit_log table: a clear error.
	code, out, stderr := sigilEnv(env, "audit", "verify")
	if code != 1 || out != "" || !strings.Contains(stderr, "no audit_log table") {
		t.Fatalf("no table: %d %q %q", code, out, stderr)
	}

	l, err := auditpg.Open(ctx, db, auditpg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr = sigilEnv(env, "audit", "verify")
	if code != 0 || out != "audit log intact: 0 records\n" {
		t.Fatalf("empty log: %d %q %q", code, out, stderr)
	}
	for i := 1; i <= 5; i++ {
		err := l.Append(ctx, audit.Record{RequestID: fmt.Sprint("req-", i), Identity: "token:test", RPC: "sigil.v1.KeyManagementService/Encrypt",
			Key: "orders", KeyVersion: 1, Outcome: audit.OutcomeOK, Peer: "127.0.0.1:1234"})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = sigilEnv(env, "audit", "verify")
	if code != 0 || out != "audit log intact: 5 records\n" || stderr != "" {
		t.Fatalf("intact log from SIGIL_DATABASE_URL: %d %q %q", code, out, stderr)
	}
	code, out, _ = sigilEnv(nil, "audit", "verify", "--database-url", db)
	if code != 0 || out != "audit log intact: 5 records\n" {
		t.Fatalf("intact log from --database-url: %d %q", code, out)
	}

	exec := func(sql string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE audit_log SET identity = 'x' WHERE seq = 3`)
	code, out, stderr = sigilEnv(env, "audit", "verify")
	if code != 1 || !strings.HasPrefix(out, "audit log broken at record 3: ") || !strings.Contains(out, "2 records before it are intact") {
		t.Fatalf("edited record 3: %d %q %q", code, out, stderr)
	}
	exec(`UPDATE audit_log SET identity = 'token:test' WHERE seq = 3`)
	if code, out, _ := sigilEnv(env, "audit", "verify"); code != 0 {
		t.Fatalf("after undoing the edit: %d %q", code, out)
	}
	exec(`DELETE FROM audit_log WHERE seq = 2`)
	code, out, _ = sigilEnv(env, "audit", "verify")
	if code != 1 || !strings.HasPrefix(out, "audit log broken at record 3: ") {
		t.Fatalf("deleted record 2: %d %q", code, out)
	}
}

func TestAuditVerifyErrors(t *testing.T) {
	code, _, stderr := sigilEnv(nil, "audit", "verify")
	if code != 1 || !strings.Contains(stderr, "--database-url or SIGIL_DATABASE_URL is required") {
		t.Fatalf("no URL: %d %q", code, stderr)
	}
	code, _, stderr = sigilEnv(nil, "audit")
	if code != 2 || !strings.Contains(stderr, "usage: sigil audit verify") {
		t.Fatalf("no subcommand: %d %q", code, stderr)
	}
	code, _, _ = sigilEnv(nil, "audit", "verify", "extra")
	if code != 1 {
		t.Fatalf("extra argument: %d", code)
	}
	// An unreachable database: an error, without the password.
	const password = "hunter2-not-a-real-password"
	url := "postgres://sigil:" + password + "@127.0.0.1:1/sigil?sslmode=disable&connect_timeout=2"
	code, out, stderr := sigilEnv(map[string]string{"SIGIL_DATABASE_URL": url}, "audit", "verify")
	if code != 1 || !strings.Contains(stderr, "sigil: audit verify: cannot read the audit log") {
		t.Fatalf("unreachable database: %d %q %q", code, out, stderr)
	}
	if strings.Contains(out+stderr, password) {
		t.Fatalf("the output shows the password: %q %q", out, stderr)
	}
}
