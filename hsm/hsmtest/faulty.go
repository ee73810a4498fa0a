package hsmtest

import (
	"context"
	"crypto"
	"fmt"
	"slices"
	"sync"

	"github.com/sigil-kms/sigil/hsm"
)

// ErrDevice is an error like the one a PKCS#11 backend returns when the
// device fails, for use with Faulty.Fail.
var ErrDevice = fmt.Errorf("%w: C_Encrypt: pkcs11: 0x30: CKR_DEVICE_ERROR", hsm.ErrUnavailable)

// Method names accepted by Faulty.Fail and Faulty.Calls.
const (
	MethodGenerateKey = "GenerateKey"
	MethodSign        = "Sign"
	MethodSeal        = "Seal"
	MethodOpen        = "Open"
	MethodDestroy     = "Destroy"
	MethodExists      = "Exists"
	MethodRandom      = "Random"
	MethodPing        = "Ping"
	MethodClose       = "Close"
)

// Faulty is an hsm.Backend decorator for fault injection. It passes calls
// to the wrapped Backend until Fail is called, and counts calls per method.
// It is safe for concurrent use.
type Faulty struct {
	b hsm.Backend

	mu      sync.Mutex
	err     error
	methods []string // methods that fail; empty means all
	calls   map[string]int
}

var _ hsm.Backend = (*Faulty)(nil)

// NewFaulty returns a Faulty around b.
func NewFaulty(b hsm.Backend) *Faulty {
	return &Faulty{b: b, calls: make(map[string]int)}
}

// Fail makes every subsequent call return err, unchanged, until Recover. If
// methods are given, only calls to those methods fail. Close never fails.
// Pass an error wrapping an hsm sentinel, such as ErrDevice.
func (f *Faulty) Fail(err error, methods ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
	f.methods = slices.Clone(methods)
}

// Recover makes calls reach the wrapped Backend again.
func (f *Faulty) Recover() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = nil
	f.methods = nil
}

// Calls returns the number of calls made to method, failed ones included.
func (f *Faulty) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// TotalCalls returns the number of calls made to all methods but Close.
func (f *Faulty) TotalCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for m, c := range f.calls {
		if m != MethodClose {
			n += c
		}
	}
	return n
}

// ResetCalls sets all call counts to zero.
func (f *Faulty) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.calls)
}

// enter counts a call to method and returns the error it must fail with.
func (f *Faulty) enter(method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
	if f.err == nil || (len(f.methods) > 0 && !slices.Contains(f.methods, method)) {
		return nil
	}
	return f.err
}

// GenerateKey calls the wrapped Backend unless failing.
func (f *Faulty) GenerateKey(ctx context.Context, spec hsm.KeySpec) (crypto.PublicKey, error) {
	if err := f.enter(MethodGenerateKey); err != nil {
		return nil, err
	}
	return f.b.GenerateKey(ctx, spec)
}

// Sign calls the wrapped Backend unless failing.
func (f *Faulty) Sign(ctx context.Context, id, input []byte, m hsm.Mechanism) ([]byte, error) {
	if err := f.enter(MethodSign); err != nil {
		return nil, err
	}
	return f.b.Sign(ctx, id, input, m)
}

// Seal calls the wrapped Backend unless failing.
func (f *Faulty) Seal(ctx context.Context, id, nonce, plaintext, aad []byte) ([]byte, error) {
	if err := f.enter(MethodSeal); err != nil {
		return nil, err
	}
	return f.b.Seal(ctx, id, nonce, plaintext, aad)
}

// Open calls the wrapped Backend unless failing.
func (f *Faulty) Open(ctx context.Context, id, nonce, ciphertext, aad []byte) ([]byte, error) {
	if err := f.enter(MethodOpen); err != nil {
		return nil, err
	}
	return f.b.Open(ctx, id, nonce, ciphertext, aad)
}

// Destroy calls the wrapped Backend unless failing.
func (f *Faulty) Destroy(ctx context.Context, id []byte) error {
	if err := f.enter(MethodDestroy); err != nil {
		return err
	}
	return f.b.Destroy(ctx, id)
}

// Exists calls the wrapped Backend unless failing.
func (f *Faulty) Exists(ctx context.Context, id []byte) (bool, error) {
	if err := f.enter(MethodExists); err != nil {
		return false, err
	}
	return f.b.Exists(ctx, id)
}

// Random calls the wrapped Backend unless failing.
func (f *Faulty) Random(ctx context.Context, n int) ([]byte, error) {
	if err := f.enter(MethodRandom); err != nil {
		return nil, err
	}
	return f.b.Random(ctx, n)
}

// Ping calls the wrapped Backend unless failing.
func (f *Faulty) Ping(ctx context.Context) error {
	if err := f.enter(MethodPing); err != nil {
		return err
	}
	return f.b.Ping(ctx)
}

// Close closes the wrapped Backend; it never fails by injection.
func (f *Faulty) Close() error {
	f.mu.Lock()
	f.calls[MethodClose]++
	f.mu.Unlock()
	return f.b.Close()
}
