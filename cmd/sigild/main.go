// Command sigild is the Sigil key management server. It serves the
// KeyManagementService over Connect, gRPC and gRPC-Web on one port, with
// keys in a PKCS#11 HSM and metadata in Postgres.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/hsm/pkcs11"
	"github.com/sigil-kms/sigil/keystore/cache"
	"github.com/sigil-kms/sigil/keystore/postgres"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sigild:", err)
		os.Exit(1)
	}
}

// run starts sigild and serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	db, err := postgres.Open(startCtx, cfg.databaseURL)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	// Key metadata is served from memory; other replicas' changes arrive
	// through the database's notifications.
	store := cache.New(ctx, db, cache.Options{Logger: log})
	defer store.Close()
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
	// The backend is closed only once no request can still be using it.
	var inflight sync.WaitGroup
	svc := kms.New(backend, store, kms.WithLogger(log), kms.WithPendingGrace(cfg.pendingGrace), kms.WithFailpoint(failpoint(getenv)))
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
	api := server.New(svc, server.Options{Logger: log})
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
	}
	srv.Protocols.SetHTTP1(true)
	scheme := "http"
	if cfg.tlsCert != "" {
		srv.Protocols.SetHTTP2(true)
		scheme = "https"
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	serveErr := make(chan error, 1)
	go func() {
		if cfg.tlsCert != "" {
			serveErr <- srv.ServeTLS(ln, cfg.tlsCert, cfg.tlsKey)
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()
	mode := ""
	if cfg.dev {
		mode = " (dev mode: no authentication)"
	}
	log.Info("sigild listening", "url", scheme+"://"+ln.Addr().String(), "dev", cfg.dev)
	fmt.Fprintf(stderr, "sigild: listening on %s://%s%s\n", scheme, ln.Addr(), mode)

	select {
	case err := <-serveErr:
		_ = srv.Close()
		return errors.Join(err, closeWhenIdle(&inflight, backend))
	case <-ctx.Done():
	}
	log.Info("sigild shutting down")
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelShutdown()
	err = srv.Shutdown(shutdownCtx)
	if err != nil {
		_ = srv.Close()
		err = fmt.Errorf("shutdown: %w", err)
	}
	return errors.Join(err, closeWhenIdle(&inflight, backend))
}

// closeWhenIdle closes the HSM backend once no handler is running, waiting
// at most 10 seconds; a handler stuck in a module call past that keeps the
// backend open, and the process exits without closing it.
func closeWhenIdle(inflight *sync.WaitGroup, backend io.Closer) error {
	idle := make(chan struct{})
	go func() {
		inflight.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		return backend.Close()
	case <-time.After(10 * time.Second):
		return errors.New("requests still running after shutdown; HSM sessions left open")
	}
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
