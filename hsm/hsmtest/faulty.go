package hsmtest

import (
	"context"
	"crypto"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sigil-kms/sigil/hsm"
)

// Errors like the ones the PKCS#11 backend returns when the device, the
// session or the login fails, for use with Faulty.Fail and Faulty.FailNext.
//
// All three wrap hsm.ErrUnavailable and nothing else: each means the module
// could not serve the call, and the call may succeed later. The PKCS#11
// backend retries a dead session on a fresh one and logs in again by itself,
// so a caller sees these only when that did not help; none of them may ever
// read as hsm.ErrNotFound or hsm.ErrInvalid, since an outage is not a
// missing key or a bad request.
var (
	// ErrDevice is a device failure (CKR_DEVICE_ERROR).
	ErrDevice = fmt.Errorf("%w: C_Encrypt: pkcs11: 0x30: CKR_DEVICE_ERROR", hsm.ErrUnavailable)
	// ErrSessionInvalid is a session that the token no longer knows
	// (CKR_SESSION_HANDLE_INVALID), as after a token reset.
	ErrSessionInvalid = fmt.Errorf("%w: C_EncryptInit: pkcs11: 0xB3: CKR_SESSION_HANDLE_INVALID", hsm.ErrUnavailable)
	// ErrNotLoggedIn is a token that logged the user out
	// (CKR_USER_NOT_LOGGED_IN).
	ErrNotLoggedIn = fmt.Errorf("%w: C_FindObjectsInit: pkcs11: 0x101: CKR_USER_NOT_LOGGED_IN", hsm.ErrUnavailable)
)

// Method names accepted by Faulty.Fail, Faulty.FailNext, Faulty.Delay and
// Faulty.Calls.
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
// to the wrapped Backend until told to fail (Fail, FailNext) or to be slow
// (Delay), and counts calls per method. Close is never faulty. It is safe
// for concurrent use.
type Faulty struct {
	b hsm.Backend

	mu        sync.Mutex
	err       error    // the injected error; nil if not failing
	failOnly  []string // methods that fail; empty means all
	remaining int      // calls left to fail; 0 means until Recover
	delay     time.Duration
	slowOnly  []string // methods that are slow; empty means all
	calls     map[string]int
}

// selected reports whether method is among only, an empty list selecting
// every method.
func selected(only []string, method string) bool {
	return len(only) == 0 || slices.Contains(only, method)
}

var _ hsm.Backend = (*Faulty)(nil)

// NewFaulty returns a Faulty around b.
func NewFaulty(b hsm.Backend) *Faulty {
	return &Faulty{b: b, calls: make(map[string]int)}
}

// Fail makes every subsequent call return err, unchanged, until Recover. If
// methods are given, only calls to those methods fail. It replaces an
// earlier Fail or FailNext. Pass an error wrapping an hsm sentinel, such as
// ErrDevice.
func (f *Faulty) Fail(err error, methods ...string) {
	f.FailNext(0, err, methods...)
}

// FailNext makes the next n calls (to methods, if given) return err,
// unchanged; later calls reach the wrapped Backend again. n = 0 means until
// Recover, as Fail. A call counts against n when it starts, even if a Delay
// then ends it by its context. It replaces an earlier Fail or FailNext.
func (f *Faulty) FailNext(n int, err error, methods ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.failOnly, f.remaining = err, slices.Clone(methods), max(n, 0)
}

// Delay makes every subsequent call (to methods, if given) wait d before it
// goes on, as a slow module would, until Recover. The wait honours the
// call's context: if ctx ends first, the call returns an error wrapping both
// hsm.ErrUnavailable and ctx.Err() and does not reach the wrapped Backend.
// A delayed call that is also failing fails after the wait. Delay replaces
// an earlier Delay; d <= 0 ends it.
func (f *Faulty) Delay(d time.Duration, methods ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay, f.slowOnly = max(d, 0), slices.Clone(methods)
}

// Recover ends all failures and delays, so that calls reach the wrapped
// Backend at once again. Calls already waiting out a delay finish it.
func (f *Faulty) Recover() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.failOnly, f.remaining = nil, nil, 0
	f.delay, f.slowOnly = 0, nil
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

// enter counts a call to method, waits out its delay and returns the error
// it must fail with, if any.
func (f *Faulty) enter(ctx context.Context, method string) error {
	f.mu.Lock()
	f.calls[method]++
	var delay time.Duration
	if selected(f.slowOnly, method) {
		delay = f.delay
	}
	var err error
	if f.err != nil && selected(f.failOnly, method) {
		err = f.err
		if f.remaining > 0 {
			if f.remaining--; f.remaining == 0 {
				f.err, f.failOnly = nil, nil
			}
		}
	}
	f.mu.Unlock()
	if delay > 0 {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return fmt.Errorf("%w: hsmtest: %s delayed by %v: %w", hsm.ErrUnavailable, method, delay, ctx.Err())
		}
	}
	return err
}

// GenerateKey calls the wrapped Backend unless failing or out of time.
func (f *Faulty) GenerateKey(ctx context.Context, spec hsm.KeySpec) (crypto.PublicKey, error) {
	if err := f.enter(ctx, MethodGenerateKey); err != nil {
		return nil, err
	}
	return f.b.GenerateKey(ctx, spec)
}

// Sign calls the wrapped Backend unless failing or out of time.
func (f *Faulty) Sign(ctx context.Context, id, input []byte, m hsm.Mechanism) ([]byte, error) {
	if err := f.enter(ctx, MethodSign); err != nil {
		return nil, err
	}
	return f.b.Sign(ctx, id, input, m)
}

// Seal calls the wrapped Backend unless failing or out of time.
func (f *Faulty) Seal(ctx context.Context, id, nonce, plaintext, aad []byte) ([]byte, error) {
	if err := f.enter(ctx, MethodSeal); err != nil {
		return nil, err
	}
	return f.b.Seal(ctx, id, nonce, plaintext, aad)
}

// Open calls the wrapped Backend unless failing or out of time.
func (f *Faulty) Open(ctx context.Context, id, nonce, ciphertext, aad []byte) ([]byte, error) {
	if err := f.enter(ctx, MethodOpen); err != nil {
		return nil, err
	}
	return f.b.Open(ctx, id, nonce, ciphertext, aad)
}

// Destroy calls the wrapped Backend unless failing or out of time.
func (f *Faulty) Destroy(ctx context.Context, id []byte) error {
	if err := f.enter(ctx, MethodDestroy); err != nil {
		return err
	}
	return f.b.Destroy(ctx, id)
}

// Exists calls the wrapped Backend unless failing or out of time.
func (f *Faulty) Exists(ctx context.Context, id []byte) (bool, error) {
	if err := f.enter(ctx, MethodExists); err != nil {
		return false, err
	}
	return f.b.Exists(ctx, id)
}

// Random calls the wrapped Backend unless failing or out of time.
func (f *Faulty) Random(ctx context.Context, n int) ([]byte, error) {
	if err := f.enter(ctx, MethodRandom); err != nil {
		return nil, err
	}
	return f.b.Random(ctx, n)
}

// Ping calls the wrapped Backend unless failing or out of time.
func (f *Faulty) Ping(ctx context.Context) error {
	if err := f.enter(ctx, MethodPing); err != nil {
		return err
	}
	return f.b.Ping(ctx)
}

// Close closes the wrapped Backend; it is never failed or delayed.
func (f *Faulty) Close() error {
	f.mu.Lock()
	f.calls[MethodClose]++
	f.mu.Unlock()
	return f.b.Close()
}
