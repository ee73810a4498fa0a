// Command sigil-bench drives one Sigil RPC at a fixed concurrency for a
// fixed duration (or count) and reports its throughput and latency as one
// line of JSON on stdout and a line for people on stderr.
//
// Server mode calls a sigild over the Connect protocol on HTTP/2 (h2c for
// http:// URLs) with a bearer token read from a file:
//
//	sigil-bench -addr http://127.0.0.1:8380 -token-file tok -rpc SignES256 -concurrency 16 -duration 10s
//
// Raw mode performs the same cryptographic operation in process through
// hsm/pkcs11 on a token, as the baseline a server can at best reach:
//
//	sigil-bench -raw -hsm-module /usr/lib/softhsm/libsofthsm2.so -hsm-token-label bench -hsm-pin-file pin -rpc SignES256 -concurrency 16
//
// Both modes create the keys they use (server keys are named
// bench-<rpc>-<random>; raw keys are destroyed at the end), check every
// response and verify a sample of them after the timed part.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// rpcs lists the operations sigil-bench can drive.
var rpcs = []string{"Encrypt1K", "Decrypt1K", "GenerateDataKey", "SignES256", "SignPS256", "SignJWTES256"}

// maxConcurrency bounds -concurrency.
const maxConcurrency = 4096

// setupTimeout bounds creating keys and checking samples, before and after
// the timed part.
const setupTimeout = 2 * time.Minute

// config is sigil-bench's command line.
type config struct {
	addr        string
	tokenFile   string
	rpc         string
	concurrency int
	duration    time.Duration
	count       int
	grace       time.Duration

	raw         bool
	hsmModule   string
	hsmLabel    string
	hsmPINFile  string
	hsmSessions int
}

// mode returns "raw" or "server".
func (c config) mode() string {
	if c.raw {
		return "raw"
	}
	return "server"
}

// parseArgs reads the command line and checks it.
func parseArgs(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("sigil-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "", "server URL, http:// (h2c, loopback only) or https://")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the bearer token (server mode)")
	fs.StringVar(&c.rpc, "rpc", "", "operation: "+strings.Join(rpcs, ", "))
	fs.IntVar(&c.concurrency, "concurrency", 1, "number of goroutines issuing requests")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to issue requests")
	fs.IntVar(&c.count, "count", 0, "stop after this many requests (still bounded by -duration)")
	fs.DurationVar(&c.grace, "grace", 30*time.Second, "how long requests still running after -duration may take before they are cut off")
	fs.BoolVar(&c.raw, "raw", false, "raw mode: call the HSM in process instead of a server")
	fs.StringVar(&c.hsmModule, "hsm-module", "/usr/lib/softhsm/libsofthsm2.so", "PKCS#11 module (raw mode)")
	fs.StringVar(&c.hsmLabel, "hsm-token-label", "", "token label (raw mode)")
	fs.StringVar(&c.hsmPINFile, "hsm-pin-file", "", "file holding the token's user PIN (raw mode)")
	fs.IntVar(&c.hsmSessions, "hsm-max-sessions", 8, "HSM session pool size (raw mode; sigild's default is 8)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, c.check()
}

// check reports every problem with the configuration.
func (c config) check() error {
	var errs []error
	if !knownRPC(c.rpc) {
		errs = append(errs, fmt.Errorf("-rpc %q: want one of %s", c.rpc, strings.Join(rpcs, ", ")))
	}
	if c.concurrency < 1 || c.concurrency > maxConcurrency {
		errs = append(errs, fmt.Errorf("-concurrency %d: want 1..%d", c.concurrency, maxConcurrency))
	}
	if c.duration <= 0 {
		errs = append(errs, errors.New("-duration must be positive (every run is bounded in time)"))
	}
	if c.count < 0 {
		errs = append(errs, errors.New("-count must not be negative"))
	}
	if c.grace <= 0 {
		errs = append(errs, errors.New("-grace must be positive"))
	}
	if c.raw {
		if c.hsmModule == "" || c.hsmLabel == "" || c.hsmPINFile == "" {
			errs = append(errs, errors.New("-raw needs -hsm-module, -hsm-token-label and -hsm-pin-file"))
		}
		if c.hsmSessions < 1 {
			errs = append(errs, errors.New("-hsm-max-sessions must be at least 1"))
		}
	} else {
		if err := checkAddr(c.addr); err != nil {
			errs = append(errs, err)
		}
		if c.tokenFile == "" {
			errs = append(errs, errors.New("-token-file is required in server mode"))
		}
	}
	return errors.Join(errs...)
}

// knownRPC reports whether name is one of rpcs.
func knownRPC(name string) bool {
	for _, r := range rpcs {
		if r == name {
			return true
		}
	}
	return false
}

// checkAddr checks a server URL: https, or http to a loopback host only,
// since the bearer token would otherwise travel in clear.
func checkAddr(addr string) error {
	if addr == "" {
		return errors.New("-addr is required in server mode")
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return fmt.Errorf("-addr %q: want http://host:port or https://host:port", addr)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if !loopback(u.Hostname()) {
			return fmt.Errorf("-addr %q: plain http only to a loopback address", addr)
		}
		return nil
	}
	return fmt.Errorf("-addr %q: scheme must be http or https", addr)
}

// loopback reports whether host is localhost or a loopback IP address.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readSecret returns the first line of a file, without surrounding space.
func readSecret(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" || strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("%s file %s must hold exactly one non-empty line", what, path)
	}
	return s, nil
}

// bench prepares one operation: its function, and a check of the samples it
// kept, run after the timed part, and a cleanup.
type bench struct {
	op      opFunc
	verify  func(ctx context.Context) error
	cleanup func()
}

func main() {
	cfg, err := parseArgs(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sigil-bench: %v\n", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var got atomic.Value
	go func() {
		s := <-sigs
		got.Store(s)
		cancel()
	}()
	err = run(ctx, cfg, os.Stdout, os.Stderr)
	if s, ok := got.Load().(os.Signal); ok {
		// Die of the signal, after cleaning up, so that a shell running
		// sigil-bench in a loop stops too.
		signal.Reset(s)
		_ = syscall.Kill(os.Getpid(), s.(syscall.Signal))
		time.Sleep(time.Second)
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sigil-bench: %v\n", err)
		os.Exit(1)
	}
}

// run prepares the operation, drives it and prints the result. It returns
// an error only if preparing failed: failed operations are counted in the
// result, not returned. An interrupted run (ctx cancelled) skips the checks
// of the kept samples and says so in the result.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	setup, cancel := context.WithTimeout(ctx, setupTimeout)
	var b bench
	var err error
	if cfg.raw {
		b, err = newRawBench(setup, cfg)
	} else {
		b, err = newServerBench(setup, cfg)
	}
	cancel()
	if err != nil {
		return fmt.Errorf("%s %s: setup: %w", cfg.mode(), cfg.rpc, err)
	}
	defer b.cleanup()

	// The hard bound: the duration plus the grace for calls in flight.
	timed, cancel := context.WithTimeout(ctx, cfg.duration+cfg.grace)
	lat, codes, first, elapsed := drive(timed, cfg.concurrency, cfg.duration, cfg.count, b.op)
	cancel()

	interrupted := ctx.Err() != nil
	if !interrupted {
		check, cancel := context.WithTimeout(ctx, setupTimeout)
		if err := b.verify(check); err != nil {
			codes["check"]++
			if first == "" {
				first = err.Error()
			}
		}
		cancel()
	}

	r := summarize(cfg.rpc, cfg.mode(), cfg.concurrency, lat, codes, first, elapsed)
	r.Interrupted = interrupted
	fmt.Fprintln(stderr, r.human())
	return r.write(stdout)
}
