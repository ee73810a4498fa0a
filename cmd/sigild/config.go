package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// config is sigild's configuration, from flags with environment defaults.
type config struct {
	listen        string
	databaseURL   string
	hsmModule     string
	hsmTokenLabel string
	hsmPINFile    string
	hsmSessions   int
	tlsCert       string
	tlsKey        string
	dev           bool
	logLevel      string
	schedule      time.Duration
	pendingGrace  time.Duration
	policyFile    string
	clientCAFile  string
	authConfig    string
	auditSaltFile string
	auditStdout   bool
}

const defaultModule = "/usr/lib/softhsm/libsofthsm2.so"

// parseConfig reads flags from args; each flag's default comes from its
// environment variable, looked up with getenv.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("sigild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs.StringVar(&c.listen, "listen", env("SIGIL_LISTEN", "127.0.0.1:8380"), "address to serve on (env SIGIL_LISTEN)")
	fs.StringVar(&c.databaseURL, "database-url", env("SIGIL_DATABASE_URL", ""), "Postgres URL (env SIGIL_DATABASE_URL)")
	fs.StringVar(&c.hsmModule, "hsm-module", env("SIGIL_HSM_MODULE", defaultModule), "PKCS#11 module path (env SIGIL_HSM_MODULE)")
	fs.StringVar(&c.hsmTokenLabel, "hsm-token-label", env("SIGIL_HSM_TOKEN_LABEL", ""), "label of the HSM token (env SIGIL_HSM_TOKEN_LABEL)")
	fs.StringVar(&c.hsmPINFile, "hsm-pin-file", env("SIGIL_HSM_PIN_FILE", ""), "file holding the token's user PIN (env SIGIL_HSM_PIN_FILE)")
	fs.IntVar(&c.hsmSessions, "hsm-max-sessions", 8, "largest number of HSM sessions")
	fs.StringVar(&c.tlsCert, "tls-cert", env("SIGIL_TLS_CERT", ""), "TLS certificate file; serve TLS when set (env SIGIL_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "tls-key", env("SIGIL_TLS_KEY", ""), "TLS private key file (env SIGIL_TLS_KEY)")
	fs.BoolVar(&c.dev, "dev", env("SIGIL_DEV", "") == "1", "development mode: no authentication, no policy, loopback only (env SIGIL_DEV=1)")
	fs.StringVar(&c.policyFile, "policy-file", env("SIGIL_POLICY_FILE", ""), "authorization policy (YAML); reloaded on SIGHUP (env SIGIL_POLICY_FILE)")
	fs.StringVar(&c.clientCAFile, "client-ca-file", env("SIGIL_CLIENT_CA_FILE", ""), "PEM bundle of the CAs of client certificates (mTLS); needs TLS (env SIGIL_CLIENT_CA_FILE)")
	fs.StringVar(&c.authConfig, "auth-config", env("SIGIL_AUTH_CONFIG", ""), "YAML file of static token hashes and trusted JWT issuers (env SIGIL_AUTH_CONFIG)")
	fs.StringVar(&c.auditSaltFile, "audit-salt-file", env("SIGIL_AUDIT_SALT_FILE", ""), "private file of at least 16 random bytes keying the audit log's HMACs (env SIGIL_AUDIT_SALT_FILE)")
	fs.BoolVar(&c.auditStdout, "audit-stdout", env("SIGIL_AUDIT_STDOUT", "") == "1", "also write audit records to stdout as JSON lines (env SIGIL_AUDIT_STDOUT=1)")
	fs.StringVar(&c.logLevel, "log-level", env("SIGIL_LOG_LEVEL", "info"), "debug, info, warn or error (env SIGIL_LOG_LEVEL)")
	fs.DurationVar(&c.schedule, "scheduler-interval", 30*time.Second, "how often scheduled rotation, promotion and destruction run")
	fs.DurationVar(&c.pendingGrace, "pending-grace", 10*time.Minute, "age after which a half-made key version counts as abandoned")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, c.check()
}

func (c config) check() error {
	var errs []error
	if c.databaseURL == "" {
		errs = append(errs, errors.New("--database-url (SIGIL_DATABASE_URL) is required"))
	}
	if c.hsmTokenLabel == "" {
		errs = append(errs, errors.New("--hsm-token-label (SIGIL_HSM_TOKEN_LABEL) is required"))
	}
	if c.hsmPINFile == "" {
		errs = append(errs, errors.New("--hsm-pin-file (SIGIL_HSM_PIN_FILE) is required; the PIN is never a flag value"))
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key must be given together"))
	}
	if c.schedule <= 0 {
		errs = append(errs, errors.New("--scheduler-interval must be positive"))
	}
	if c.pendingGrace < 0 {
		errs = append(errs, errors.New("--pending-grace must not be negative"))
	}
	if c.hsmSessions < 1 {
		errs = append(errs, errors.New("--hsm-max-sessions must be at least 1"))
	}
	tls := c.tlsCert != ""
	if c.clientCAFile != "" && !tls {
		errs = append(errs, errors.New("--client-ca-file (mTLS) needs --tls-cert and --tls-key"))
	}
	if c.dev {
		if !loopback(c.listen) {
			errs = append(errs, fmt.Errorf("--dev serves without authentication and refuses the non-loopback address %q", c.listen))
		}
		for _, f := range []struct{ flag, value string }{
			{"--policy-file", c.policyFile}, {"--client-ca-file", c.clientCAFile}, {"--auth-config", c.authConfig},
		} {
			if f.value != "" {
				errs = append(errs, fmt.Errorf("--dev runs without authentication and policy; drop %s or drop --dev", f.flag))
			}
		}
		return errors.Join(errs...)
	}
	if c.policyFile == "" {
		errs = append(errs, errors.New("--policy-file (SIGIL_POLICY_FILE) is required (or --dev for a loopback development server)"))
	}
	if c.clientCAFile == "" && c.authConfig == "" {
		errs = append(errs, errors.New("an authentication method is required: --client-ca-file (mTLS) and/or --auth-config (tokens, JWT issuers)"))
	}
	if c.auditSaltFile == "" {
		errs = append(errs, errors.New("--audit-salt-file (SIGIL_AUDIT_SALT_FILE) is required"))
	}
	if !tls && !loopback(c.listen) {
		errs = append(errs, fmt.Errorf("--listen %q is not a loopback address and needs TLS (--tls-cert, --tls-key): credentials must not travel in clear", c.listen))
	}
	return errors.Join(errs...)
}

// loopback reports whether addr (host:port) names only loopback addresses.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// readPIN reads the PIN file, dropping a trailing newline.
func readPIN(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read HSM PIN file: %w", err)
	}
	pin := strings.TrimRight(string(b), "\r\n")
	if pin == "" {
		return "", fmt.Errorf("HSM PIN file %s is empty", path)
	}
	return pin, nil
}
