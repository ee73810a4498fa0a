// Command sigild is the Sigil key management server. It serves the
// KeyManagementService over Connect, gRPC and gRPC-Web on one port, with
// keys in a PKCS#11 HSM and metadata in Postgres.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/audit"
	auditpg "github.com/sigil-kms/sigil/audit/postgres"
	"github.com/sigil-kms/sigil/hsm/pkcs11"
	"github.com/sigil-kms/sigil/keystore/cache"
	"github.com/sigil-kms/sigil/keystore/postgres"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/metrics"
	"github.com/sigil-kms/sigil/policy"
	"github.com/sigil-kms/sigil/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sigild:", err)
		os.Exit(1)
	}
}

// run starts sigild and serves until ctx ends, then shuts down gracefully.
// Audit records go to stdout as JSON lines if --audit-stdout is set; logs go
// to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if cfg.dev {
		fmt.Fprintln(stderr, "sigild: DEV MODE: no authentication and no authorization policy; every local caller may use and manage every key. Never use --dev in production.")
		log.Warn("dev mode: no authentication, no authorization policy, loopback only")
	}
	// SIGHUP reloads the policy; registered early so that an early SIGHUP
	// does not kill the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var tlsConf *tls.Config
	if cfg.tlsCert != "" {
		if tlsConf, err = serverTLS(cfg); err != nil {
			return err
		}
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// JWKS URLs are refreshed until run returns, through the shutdown's
	// draining of requests.
	authCtx, stopAuth := context.WithCancel(context.Background())
	defer stopAuth()
	sec, err := loadSecurity(authCtx, cfg)
	if err != nil {
		return err
	}
	if sec.policy != nil {
		p := sec.policy.Policy()
		log.Info("policy loaded", "file", sec.policy.Path(), "digest", p.Digest(), "rules", p.Len())
	}
	dbURL, err := cfg.dbURL()
	if err != nil {
		return err
	}
	mets := metrics.New()
	db, err := postgres.Open(startCtx, dbURL)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	// The audit log has its own tables and migrations in the same database.
	auditDB, err := auditpg.Open(startCtx, dbURL, auditpg.Options{Observe: mets.AuditBatch})
	if err != nil {
		db.Close()
		return fmt.Errorf("open audit log: %w", err)
	}
	var auditLog audit.Log = auditDB
	if cfg.auditStdout {
		auditLog = audit.Tee(auditDB, stdout)
	}
	auditOpen := true
	defer func() {
		if auditOpen {
			_ = auditLog.Close()
		}
	}()
	// Key metadata is served from memory; other replicas' changes arrive
	// through the database's notifications.
	store := cache.New(ctx, db, cache.Options{Logger: log})
	defer store.Close()
	mets.WatchCache(func() metrics.CacheStats {
		s := store.Stats()
		return metrics.CacheStats{Hits: s.Hits, Misses: s.Misses, Bypasses: s.Bypasses, Invalidations: s.Invalidations}
	})
	pin, err := readPIN(cfg.hsmPINFile)
	if err != nil {
		return err
	}
	backend, err := pkcs11.Open(startCtx, pkcs11.Config{
		Module:      cfg.hsmModule,
		TokenLabel:  cfg.hsmTokenLabel,
		PIN:         pin,
		MaxSessions: cfg.hsmSessions,
	})
	if err != nil {
		return fmt.Errorf("open HSM: %w", err)
	}
	mets.WatchSessions(func() metrics.SessionStats {
		s := backend.Stats()
		return metrics.SessionStats{InUse: s.InUse, Idle: s.Idle, Waiting: s.Waiting, Max: s.Max}
	})
	// The backend is closed only once no request can still be using it.
	var inflight sync.WaitGroup
	svc := kms.New(mets.Backend(backend), store, kms.WithLogger(log), kms.WithPendingGrace(cfg.pendingGrace),
		kms.WithFailpoint(failpoint(getenv)), kms.WithSchedulerObserver(mets.SchedulerRun))
	if err := svc.Reconcile(startCtx); err != nil {
		log.Error("reconciliation at start failed; the scheduler retries", "cause", err.Error())
	}
	schedCtx, stopScheduler := context.WithCancel(context.Background())
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		svc.RunScheduler(schedCtx, cfg.schedule)
	}()
	defer func() {
		stopScheduler()
		<-schedDone
	}()
	opts := server.Options{Logger: log, Audit: auditLog, AuditSalt: sec.salt, Metrics: mets, MaxInFlight: cfg.maxInFlight}
	if sec.auth != nil { // never a typed nil in the interface
		opts.Authenticator = sec.auth
	}
	if sec.policy != nil {
		opts.Policy = sec.policy.Policy
	}
	api := server.New(svc, opts)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		defer inflight.Done()
		api.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		_ = backend.Close()
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		Protocols:         new(http.Protocols),
		TLSConfig:         tlsConf,
	}
	srv.Protocols.SetHTTP1(true)
	scheme := "http"
	if cfg.tlsCert != "" {
		srv.Protocols.SetHTTP2(true)
		scheme = "https"
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	if cfg.pprofListen != "" {
		stopProfiles, err := serveProfiles(cfg.pprofListen, log)
		if err != nil {
			_ = backend.Close()
			return err
		}
		defer stopProfiles()
	}
	serveErr := make(chan error, 1)
	go func() {
		if cfg.tlsCert != "" {
			serveErr <- srv.ServeTLS(ln, "", "") // the certificate is in srv.TLSConfig
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()
	mode := ""
	if cfg.dev {
		mode = " (dev mode: no authentication)"
	}
	log.Info("sigild listening", "url", scheme+"://"+ln.Addr().String(), "dev", cfg.dev,
		"authentication", sec.describeMethods(), "audit_stdout", cfg.auditStdout)
	fmt.Fprintf(stderr, "sigild: listening on %s://%s%s\n", scheme, ln.Addr(), mode)

	auditOpen = false // closed by closeWhenIdle from here on
	for stopping := false; !stopping; {
		select {
		case err := <-serveErr:
			_ = srv.Close()
			return errors.Join(err, closeWhenIdle(&inflight, backend, auditLog))
		case <-hup:
			reloadPolicy(log, sec.policy)
		case <-ctx.Done():
			stopping = true
		}
	}
	log.Info("sigild shutting down")
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelShutdown()
	err = srv.Shutdown(shutdownCtx)
	if err != nil {
		_ = srv.Close()
		err = fmt.Errorf("shutdown: %w", err)
	}
	return errors.Join(err, closeWhenIdle(&inflight, backend, auditLog))
}

// serveProfiles serves Go's pprof profiles on addr, a loopback address,
// until the returned function is called.
func serveProfiles(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("serving pprof profiles", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { _ = srv.Close() }, nil
}

// serverTLS returns the TLS configuration of --tls-cert and --tls-key. With
// --client-ca-file it requests client certificates without verifying them:
// authn verifies the chain, so that a certificate from another CA gets an
// Unauthenticated response and an audit record instead of a failed
// handshake that nothing records.
func serverTLS(cfg config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.clientCAFile != "" {
		// No ClientCAs hint either: a Go client whose certificate is not
		// from a hinted CA would send none, and the refusal would not name
		// the certificate.
		c.ClientAuth = tls.RequestClientCert
	}
	return c, nil
}

// reloadPolicy reloads the policy file on SIGHUP. A file that does not
// parse leaves the policy in force unchanged.
func reloadPolicy(log *slog.Logger, h *policy.Holder) {
	if h == nil {
		log.Warn("SIGHUP ignored: dev mode has no policy file")
		return
	}
	if err := h.Reload(); err != nil {
		log.Error("policy reload failed; the previous policy stays in force",
			"file", h.Path(), "cause", err.Error(), "digest", h.Policy().Digest())
		return
	}
	p := h.Policy()
	log.Info("policy reloaded", "file", h.Path(), "digest", p.Digest(), "rules", p.Len())
}

// closeWhenIdle closes the audit log and the HSM backend once no handler is
// running, waiting at most 10 seconds, so that every response's audit record
// is written first. A handler stuck in a module call past that keeps the
// backend open, and the process exits without closing it; the audit log is
// closed all the same, writing what is queued, and the stuck request fails.
func closeWhenIdle(inflight *sync.WaitGroup, backend io.Closer, auditLog audit.Log) error {
	idle := make(chan struct{})
	go func() {
		inflight.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		return errors.Join(closeAudit(auditLog), backend.Close())
	case <-time.After(10 * time.Second):
		return errors.Join(closeAudit(auditLog), errors.New("requests still running after shutdown; HSM sessions left open"))
	}
}

// closeAudit closes the audit log, naming it in the error.
func closeAudit(l audit.Log) error {
	if err := l.Close(); err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}

// failpointEnv names the step of making a key version at which sigild
// kills itself with SIGKILL. It exists for crash tests only.
const failpointEnv = "SIGIL_TEST_FAILPOINT"

// failpoint returns the kms failpoint hook: a no-op unless this is a test
// binary and failpointEnv is set, so that no environment variable can make
// a production sigild kill itself.
func failpoint(getenv func(string) string) func(string) {
	at := getenv(failpointEnv)
	if at == "" || !testing.Testing() {
		return func(string) {}
	}
	return func(step string) {
		if step == at {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // wait for the signal
		}
	}
}
