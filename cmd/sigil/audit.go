package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/audit"
	auditpg "github.com/sigil-kms/sigil/audit/postgres"
)

// errAuditBroken makes audit verify exit 1 after printing where the chain
// breaks.
var errAuditBroken = errors.New("audit log broken")

// auditCmd runs the subcommands of "sigil audit": only "verify" for now.
func auditCmd(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprint(c.stderr, "usage: sigil audit verify [--database-url URL]\n")
		return flag.ErrHelp
	}
	return auditVerify(ctx, c, args[1:])
}

// auditVerify reads the whole audit log from Postgres, in seq order, and
// checks its hash chain. It talks to the database, not to sigild, and needs
// only SELECT on audit_log.
func auditVerify(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	dbURL := fs.String("database-url", c.getenv("SIGIL_DATABASE_URL"),
		"Postgres URL of sigild's database (env SIGIL_DATABASE_URL; keep the password out of the command line: use the env or ~/.pgpass)")
	if _, err := parse(fs, c, args, 0, "no arguments"); err != nil {
		return err
	}
	if *dbURL == "" {
		return errors.New("audit verify: --database-url or SIGIL_DATABASE_URL is required")
	}
	password := ""
	if cfg, err := pgx.ParseConfig(*dbURL); err == nil {
		password = cfg.Password
	}
	checked, firstBad, err := auditpg.VerifyDatabase(ctx, *dbURL)
	var broken *audit.BreakError
	switch {
	case errors.As(err, &broken):
		fmt.Fprintf(c.stdout, "audit log broken at record %d: %s\n", broken.Seq, redact(broken.Reason, password))
		fmt.Fprintf(c.stdout, "%d records before it are intact\n", checked)
		return errAuditBroken
	case errors.Is(err, auditpg.ErrNoAuditLog):
		return errors.New("audit verify: the database has no audit_log table: is it sigild's database, and has sigild run on it?")
	case err != nil:
		return fmt.Errorf("audit verify: cannot read the audit log: %s", redact(err.Error(), password))
	case firstBad != 0:
		// VerifyDatabase reports a break as a *BreakError; this is a
		// safety net, never a pass.
		fmt.Fprintf(c.stdout, "audit log broken at record %d\n", firstBad)
		return errAuditBroken
	}
	_, err = fmt.Fprintf(c.stdout, "audit log intact: %d records\n", checked)
	return err
}

// redact removes the database password from s, in case some library quoted
// the URL.
func redact(s, password string) string {
	if password == "" {
		return s
	}
	return strings.ReplaceAll(s, password, "xxxxx")
}
