// Package kms is Sigil's core: it creates keys, rotates them on demand and
// on schedule, manages their versions' lifecycle, and encrypts, decrypts
// and signs with them, using an hsm.Backend for all cryptography and a
// keystore.Store for metadata. It knows nothing of transports, SQL or
// PKCS#11.
//
// A Service is safe to call from multiple goroutines.
package kms

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/keystore"
)

// Service implements Sigil's key operations.
type Service struct {
	hsm   hsm.Backend
	store keystore.Store
	rand  io.Reader
	now   func() time.Time
	log   *slog.Logger
	// failpoint is called at named steps of making a version; tests use it
	// to kill the process there.
	failpoint func(step string)
	// pendingGrace is how old a pending version must be before Reconcile
	// treats it as abandoned rather than in progress on another replica.
	pendingGrace time.Duration
	// observeRun is told of each scheduler pass; nil if unset.
	observeRun func(ran bool, d time.Duration, err error)

	budget budget
	// pubs caches parsed public keys by versionRef. Entries never change.
	pubs sync.Map
}

// Option configures a Service.
type Option func(*Service)

// WithRandom sets the source of nonces, key ids and HSM ids. The default
// is crypto/rand; tests use a fixed source for golden vectors.
func WithRandom(r io.Reader) Option {
	return func(s *Service) { s.rand = r }
}

// WithClock sets the clock that schedules rotation, promotion and
// destruction. The default is time.Now; tests move a fake clock instead of
// sleeping.
func WithClock(now func() time.Time) Option {
	return func(s *Service) { s.now = now }
}

// WithLogger sets the logger of scheduled work. The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(s *Service) { s.log = l }
}

// WithFailpoint sets a function called with the name of each step of
// making a version ("version:pending", "version:hsm", "version:commit").
// Crash tests use it to kill the process at a step; nothing else should.
func WithFailpoint(f func(step string)) Option {
	return func(s *Service) { s.failpoint = f }
}

// WithPendingGrace sets how old a pending version must be before Reconcile
// removes it (default 10 minutes). A version is pending only while a
// replica makes it; a shorter grace risks removing one in progress.
func WithPendingGrace(d time.Duration) Option {
	return func(s *Service) { s.pendingGrace = d }
}

// WithSchedulerObserver sets a function called after each pass of
// RunScheduled with whether this replica ran it (another may have held the
// lock), its duration and its error; metrics use it. It must return
// quickly.
func WithSchedulerObserver(f func(ran bool, d time.Duration, err error)) Option {
	return func(s *Service) { s.observeRun = f }
}

// WithEncryptionLimits sets the per-version encryption budget: at soft
// encryptions the scheduler rotates the key, at hard Encrypt refuses the
// version; counts are reserved from the store batch at a time. The
// defaults are 2^31 - 2^27, 2^31 and 1024.
func WithEncryptionLimits(soft, hard, batch int64) Option {
	return func(s *Service) {
		s.budget.soft, s.budget.hard, s.budget.batch = soft, hard, batch
	}
}

// New returns a Service over the backend and the store.
func New(b hsm.Backend, s keystore.Store, opts ...Option) *Service {
	svc := &Service{
		hsm:          b,
		store:        s,
		rand:         rand.Reader,
		now:          time.Now,
		log:          slog.New(slog.DiscardHandler),
		failpoint:    func(string) {},
		pendingGrace: 10 * time.Minute,
		budget:       budget{soft: 1<<31 - 1<<27, hard: 1 << 31, batch: 1024},
	}
	for _, o := range opts {
		o(svc)
	}
	svc.budget.init()
	return svc
}

// Ready reports whether the HSM and the database answer.
func (s *Service) Ready(ctx context.Context) error {
	hsmErr := make(chan error, 1)
	go func() { hsmErr <- s.hsm.Ping(ctx) }()
	dbErr := s.store.Ping(ctx)
	if err := errors.Join(<-hsmErr, dbErr); err != nil {
		return internal("ready", err)
	}
	return nil
}

// internal wraps a failure of the HSM or the store. Unavailability keeps its
// kind so that callers may retry; the text stays for logs.
func internal(op string, err error) error {
	var kerr *Error
	if errors.As(err, &kerr) {
		return err
	}
	if errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, keystore.ErrUnavailable) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	}
	return fmt.Errorf("kms: %s: %w", op, err)
}
