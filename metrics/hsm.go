package metrics

import (
	"context"
	"crypto"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-kms/sigil/hsm"
)

var _ hsm.Backend = (*Backend)(nil)

// Backend is an hsm.Backend decorator that times every call of the Backend
// it wraps and counts its failures by kind. It changes no result. Like the
// Backend it wraps, it is safe for concurrent use except Close.
type Backend struct {
	b       hsm.Backend
	ops     map[string]prometheus.Observer
	metrics *Metrics
}

// Backend returns b instrumented with m's HSM metrics.
func (m *Metrics) Backend(b hsm.Backend) *Backend {
	ops := map[string]prometheus.Observer{}
	for _, op := range []string{"generate_key", "sign", "seal", "open", "destroy", "exists", "random", "ping"} {
		ops[op] = m.hsmDuration.WithLabelValues(op) // resolved once: no label lookup per call
	}
	return &Backend{b: b, ops: ops, metrics: m}
}

// observe records a call of op that started at start and returned err.
func (b *Backend) observe(op string, start time.Time, err error) {
	b.ops[op].Observe(time.Since(start).Seconds())
	if err != nil {
		b.metrics.hsmErrors.WithLabelValues(op, errorKind(err)).Inc()
	}
}

// errorKind names the hsm sentinel err wraps.
func errorKind(err error) string {
	switch {
	case errors.Is(err, hsm.ErrNotFound):
		return "not_found"
	case errors.Is(err, hsm.ErrExists):
		return "exists"
	case errors.Is(err, hsm.ErrDecrypt):
		return "decrypt"
	case errors.Is(err, hsm.ErrInvalid):
		return "invalid"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	case errors.Is(err, hsm.ErrUnavailable):
		return "unavailable"
	}
	return "other"
}

// GenerateKey calls the wrapped Backend and times it.
func (b *Backend) GenerateKey(ctx context.Context, spec hsm.KeySpec) (crypto.PublicKey, error) {
	start := time.Now()
	pub, err := b.b.GenerateKey(ctx, spec)
	b.observe("generate_key", start, err)
	return pub, err
}

// Sign calls the wrapped Backend and times it.
func (b *Backend) Sign(ctx context.Context, id, input []byte, m hsm.Mechanism) ([]byte, error) {
	start := time.Now()
	sig, err := b.b.Sign(ctx, id, input, m)
	b.observe("sign", start, err)
	return sig, err
}

// Seal calls the wrapped Backend and times it.
func (b *Backend) Seal(ctx context.Context, id, nonce, plaintext, aad []byte) ([]byte, error) {
	start := time.Now()
	out, err := b.b.Seal(ctx, id, nonce, plaintext, aad)
	b.observe("seal", start, err)
	return out, err
}

// Open calls the wrapped Backend and times it.
func (b *Backend) Open(ctx context.Context, id, nonce, ciphertext, aad []byte) ([]byte, error) {
	start := time.Now()
	out, err := b.b.Open(ctx, id, nonce, ciphertext, aad)
	b.observe("open", start, err)
	return out, err
}

// Destroy calls the wrapped Backend and times it.
func (b *Backend) Destroy(ctx context.Context, id []byte) error {
	start := time.Now()
	err := b.b.Destroy(ctx, id)
	b.observe("destroy", start, err)
	return err
}

// Exists calls the wrapped Backend and times it.
func (b *Backend) Exists(ctx context.Context, id []byte) (bool, error) {
	start := time.Now()
	ok, err := b.b.Exists(ctx, id)
	b.observe("exists", start, err)
	return ok, err
}

// Random calls the wrapped Backend and times it.
func (b *Backend) Random(ctx context.Context, n int) ([]byte, error) {
	start := time.Now()
	out, err := b.b.Random(ctx, n)
	b.observe("random", start, err)
	return out, err
}

// Ping calls the wrapped Backend and times it.
func (b *Backend) Ping(ctx context.Context) error {
	start := time.Now()
	err := b.b.Ping(ctx)
	b.observe("ping", start, err)
	return err
}

// Close closes the wrapped Backend.
func (b *Backend) Close() error { return b.b.Close() }
