package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sigil-kms/sigil/server"
)

// config is sigild's configuration, from flags, environment variables, a
// YAML config file and defaults, in that order of precedence.
type config struct {
	configFile      string
	listen          string
	databaseURL     string
	databaseURLFile string
	hsmModule       string
	hsmTokenLabel   string
	hsmPINFile      string
	hsmSessions     int
	tlsCert         string
	tlsKey          string
	dev             bool
	logLevel        string
	schedule        time.Duration
	pendingGrace    time.Duration
	policyFile      string
	clientCAFile    string
	authConfig      string
	auditSaltFile   string
	auditStdout     bool
	maxInFlight     int
	pprofListen     string
}

const defaultModule = "/usr/lib/softhsm/libsofthsm2.so"

// setting is one configuration setting: the flag --name, the environment
// variable envName(name) and the config file key name.
type setting struct {
	name string
	// ptr is the config field: a *string, *int, *bool or *time.Duration.
	ptr any
	// def is the default, of the field's type; nil means the zero value.
	def  any
	help string
	// secret, if not empty, says what secret the file named by the
	// setting holds. Such a file must be private to sigild's user.
	secret string
}

// settings is the table of sigild's settings, bound to c's fields. A new
// setting is one more entry here (and a check in check, if it needs one).
func (c *config) settings() []setting {
	return []setting{
		{name: "config", ptr: &c.configFile, help: "YAML file of settings, keyed by flag name (for example listen: 0.0.0.0:8443)"},
		{name: "listen", ptr: &c.listen, def: "127.0.0.1:8380", help: "address to serve on"},
		{name: "database-url", ptr: &c.databaseURL, help: "Postgres URL without a password (trust, peer or certificate authentication)"},
		{name: "database-url-file", ptr: &c.databaseURLFile, help: "private file holding the Postgres URL, password included", secret: "database URL file"},
		{name: "hsm-module", ptr: &c.hsmModule, def: defaultModule, help: "PKCS#11 module path"},
		{name: "hsm-token-label", ptr: &c.hsmTokenLabel, help: "label of the HSM token"},
		{name: "hsm-pin-file", ptr: &c.hsmPINFile, help: "private file holding the token's user PIN", secret: "HSM PIN file"},
		{name: "hsm-max-sessions", ptr: &c.hsmSessions, def: 8, help: "largest number of HSM sessions"},
		{name: "tls-cert", ptr: &c.tlsCert, help: "TLS certificate file; serve TLS when set"},
		{name: "tls-key", ptr: &c.tlsKey, help: "private file holding the TLS private key", secret: "TLS private key"},
		{name: "dev", ptr: &c.dev, help: "development mode: no authentication, no policy, loopback only"},
		{name: "policy-file", ptr: &c.policyFile, help: "authorization policy (YAML); reloaded on SIGHUP"},
		{name: "client-ca-file", ptr: &c.clientCAFile, help: "PEM bundle of the CAs of client certificates (mTLS); needs TLS"},
		{name: "auth-config", ptr: &c.authConfig, help: "private YAML file of static token hashes and trusted JWT issuers", secret: "authentication config"},
		{name: "audit-salt-file", ptr: &c.auditSaltFile, help: "private file of at least 16 random bytes keying the audit log's HMACs", secret: "audit salt file"},
		{name: "audit-stdout", ptr: &c.auditStdout, help: "also write audit records to stdout as JSON lines"},
		{name: "max-inflight", ptr: &c.maxInFlight, def: server.DefaultMaxInFlight, help: "most RPCs served at once; more are refused with resource_exhausted, not queued"},
		{name: "pprof-listen", ptr: &c.pprofListen, help: "loopback address on which to serve Go's pprof profiles (off when empty)"},
		{name: "log-level", ptr: &c.logLevel, def: "info", help: "debug, info, warn or error"},
		{name: "scheduler-interval", ptr: &c.schedule, def: 30 * time.Second, help: "how often scheduled rotation, promotion and destruction run"},
		{name: "pending-grace", ptr: &c.pendingGrace, def: 10 * time.Minute, help: "age after which a half-made key version counts as abandoned"},
	}
}

// envName returns the environment variable of the setting name:
// SIGIL_ and the name in upper snake case.
func envName(name string) string {
	return "SIGIL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// usageHeader opens the --help output.
const usageHeader = `Usage: sigild [flags]

Every flag can also be set by its environment variable (shown with each
flag) or as a key of the same name in the YAML file of --config. A flag wins
over the environment, which wins over the config file. Secrets are read only
from files, which must not be readable by the group or others.

`

// parseConfig reads the configuration from args, the environment (looked up
// with getenv) and the config file, and checks the values. It does not look
// at the files the settings name; loadConfig does.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c, sourceErr, err := readConfig(args, getenv, stderr)
	if err != nil {
		return c, err
	}
	return c, errors.Join(sourceErr, c.check())
}

// loadConfig is parseConfig followed by the checks of the secret files,
// reporting every problem found together.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c, sourceErr, err := readConfig(args, getenv, stderr)
	if err != nil {
		return c, err
	}
	return c, errors.Join(sourceErr, c.check(), c.checkSecretFiles())
}

// readConfig sets c from the flags in args, then each setting not given as
// a flag from its environment variable, then from the config file. err is
// a bad command line (or flag.ErrHelp); sourceErr reports the bad values in
// the environment and the config file, which leave their settings at the
// default.
func readConfig(args []string, getenv func(string) string, stderr io.Writer) (c config, sourceErr, err error) {
	fs := flag.NewFlagSet("sigild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}
	settings := c.settings()
	for _, s := range settings {
		register(fs, s)
	}
	if err := fs.Parse(args); err != nil {
		return c, nil, err
	}
	if fs.NArg() > 0 {
		return c, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	onCommandLine := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	if !onCommandLine["config"] {
		c.configFile = getenv(envName("config"))
	}
	var file map[string]fileValue
	var errs []error
	if c.configFile != "" {
		var err error
		if file, err = readConfigFile(c.configFile, settings); err != nil {
			errs = append(errs, err)
		}
	}
	defaults := make(map[string]string)
	fs.VisitAll(func(f *flag.Flag) { defaults[f.Name] = f.DefValue })
	for _, s := range settings {
		if onCommandLine[s.name] || s.name == "config" {
			continue
		}
		if v := getenv(envName(s.name)); v != "" {
			if err := fs.Set(s.name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %s", envName(s.name), v, want(s)))
				_ = fs.Set(s.name, defaults[s.name])
			}
		} else if v, ok := file[s.name]; ok {
			if err := fs.Set(s.name, v.text); err != nil {
				errs = append(errs, fmt.Errorf("--config %s: line %d: %s: %q: %s", c.configFile, v.line, s.name, v.text, want(s)))
				_ = fs.Set(s.name, defaults[s.name])
			}
		}
	}
	// The Postgres driver would take a password from these; secrets come
	// only from files.
	for _, name := range []string{"PGPASSWORD", "PGSSLPASSWORD"} {
		if getenv(name) != "" {
			errs = append(errs, fmt.Errorf("%s is set: secrets are read only from files; put the database URL, password included, in --database-url-file (%s)", name, envName("database-url-file")))
		}
	}
	return c, errors.Join(errs...), nil
}

// register defines the flag of s on fs, its help naming its environment
// variable.
func register(fs *flag.FlagSet, s setting) {
	help := s.help + " (env " + envName(s.name) + ")"
	switch p := s.ptr.(type) {
	case *string:
		def, _ := s.def.(string)
		fs.StringVar(p, s.name, def, help)
	case *int:
		def, _ := s.def.(int)
		fs.IntVar(p, s.name, def, help)
	case *bool:
		def, _ := s.def.(bool)
		fs.BoolVar(p, s.name, def, help)
	case *time.Duration:
		def, _ := s.def.(time.Duration)
		fs.DurationVar(p, s.name, def, help)
	default:
		panic(fmt.Sprintf("setting %s: unsupported type %T", s.name, s.ptr))
	}
}

// want describes the values the setting s takes, for an error.
func want(s setting) string {
	switch s.ptr.(type) {
	case *int:
		return "want a whole number"
	case *bool:
		return "want true or false"
	case *time.Duration:
		return "want a duration such as 30s, 10m or 1h"
	}
	return "invalid value"
}

func (c config) check() error {
	var errs []error
	if err := c.checkDatabase(); err != nil {
		errs = append(errs, err)
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
	if c.pprofListen != "" && !loopback(c.pprofListen) {
		errs = append(errs, fmt.Errorf("--pprof-listen %q: profiles are served on a loopback address only", c.pprofListen))
	}
	if c.maxInFlight < 1 {
		errs = append(errs, errors.New("--max-inflight must be at least 1"))
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
