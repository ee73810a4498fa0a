package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
)

func TestAllSessionsClosedBehindTheBack(t *testing.T) {
	f := newFixture(t, 4)
	for _, o := range f.ops(t) {
		// As a token reset would: every session of the application
		// ends, which also logs the token out.
		fill(t, f.b, 4)
		if err := f.b.mod.ctx.CloseAllSessions(f.b.pool.currentSlot()); err != nil {
			t.Fatal(err)
		}
		if err := o.run(t.Context()); err != nil {
			t.Errorf("%s after C_CloseAllSessions: %v", o.name, err)
		}
		// Random needs no login, so it leaves the token logged out.
		checkPool(t, f.b, o.name != "Random")
	}
}

func TestGenerateKeyAfterSessionsClosedMakesOneKey(t *testing.T) {
	f := newFixture(t, 2)
	fill(t, f.b, 2)
	if err := f.b.mod.ctx.CloseAllSessions(f.b.pool.currentSlot()); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []hsm.KeyType{hsm.AES256, hsm.Ed25519} {
		id := hsmtest.NewID(t)
		if _, err := f.b.GenerateKey(t.Context(), hsm.KeySpec{ID: id, Type: typ}); err != nil {
			t.Fatalf("GenerateKey(%v): %v", typ, err)
		}
		n := 0
		for _, o := range f.tok.Objects(t) {
			if bytes.Equal(o.ID, id) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("GenerateKey(%v) left %d objects with its id, want 1", typ, n)
		}
		if err := f.b.mod.ctx.CloseAllSessions(f.b.pool.currentSlot()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSessionsClosedOneByOne(t *testing.T) {
	f := newFixture(t, 3)
	fill(t, f.b, 3)
	hs := idleHandles(f.b) // bottom to top; the top one is used next
	for _, s := range []p11.SessionHandle{hs[0], hs[2]} {
		if err := f.b.mod.ctx.CloseSession(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range f.ops(t) {
		if err := o.run(t.Context()); err != nil {
			t.Errorf("%s after two sessions were closed: %v", o.name, err)
		}
	}
	checkPool(t, f.b, true)
	if got := idleHandles(f.b); slices.Contains(got, hs[0]) || slices.Contains(got, hs[2]) {
		t.Errorf("idle sessions %v still hold a closed one of %v", got, hs)
	}
}

func TestLogoutBehindTheBack(t *testing.T) {
	f := newFixture(t, 2)
	for _, o := range f.ops(t) {
		fill(t, f.b, 2)
		s, err := f.b.pool.get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		err = f.b.mod.ctx.Logout(s)
		f.b.pool.put(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.run(t.Context()); err != nil {
			t.Errorf("%s after C_Logout: %v", o.name, err)
		}
		checkPool(t, f.b, o.name != "Random")
	}
}

// rvError is what a module call returning rv gives.
func rvError(rv uint) error { return fmt.Errorf("C_Encrypt: %w", p11.Error(rv)) }

func TestInjectedFailures(t *testing.T) {
	f := newFixture(t, 2)
	cases := []struct {
		name  string
		fail  func(call int) error // the error of the call-th call, from 1
		calls int
		ok    bool
	}{
		{"session invalid once", func(n int) error {
			if n == 1 {
				return rvError(p11.CKR_SESSION_HANDLE_INVALID)
			}
			return nil
		}, 2, true},
		{"session invalid", func(int) error { return rvError(p11.CKR_SESSION_HANDLE_INVALID) }, 2, false},
		{"session closed", func(int) error { return rvError(p11.CKR_SESSION_CLOSED) }, 2, false},
		// A device error that a fresh session does not cure resets the
		// module; then the call gets one more pair of tries.
		{"device error", func(int) error { return rvError(p11.CKR_DEVICE_ERROR) }, 4, false},
		{"device removed", func(int) error { return rvError(p11.CKR_DEVICE_REMOVED) }, 4, false},
		{"token not present", func(int) error { return rvError(p11.CKR_TOKEN_NOT_PRESENT) }, 4, false},
		{"not logged in", func(int) error { return rvError(p11.CKR_USER_NOT_LOGGED_IN) }, 2, false},
		{"not logged in once", func(n int) error {
			if n == 1 {
				return rvError(p11.CKR_USER_NOT_LOGGED_IN)
			}
			return nil
		}, 2, true},
		{"panic", func(int) error { panic("module exploded") }, 1, false},
		{"operation in doubt", func(int) error { return dirtyError{rvError(p11.CKR_GENERAL_ERROR)} }, 1, false},
		{"final", func(int) error { return finalError{rvError(p11.CKR_SESSION_HANDLE_INVALID)} }, 1, false},
		{"final device error", func(int) error { return finalError{rvError(p11.CKR_DEVICE_ERROR)} }, 1, false},
	}
	for _, c := range cases {
		n := 0
		err := f.b.session(t.Context(), func(p11.SessionHandle) error {
			n++
			return c.fail(n)
		})
		err = classify(err, hsm.ErrDecrypt)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case !c.ok && c.name != "operation in doubt" && !errors.Is(err, hsm.ErrUnavailable):
			t.Errorf("%s: %v, want ErrUnavailable", c.name, err)
		}
		if n != c.calls {
			t.Errorf("%s: %d calls, want %d", c.name, n, c.calls)
		}
		// A module reset logs the token out until a call needs it.
		checkPool(t, f.b, false)
		// Whatever happened, the Backend works again by itself.
		for _, o := range f.ops(t) {
			if err := o.run(t.Context()); err != nil {
				t.Errorf("%s: %s afterwards: %v", c.name, o.name, err)
			}
		}
		checkPool(t, f.b, true) // Ping, the last op, logged in
	}
}

func TestInjectedFailuresConcurrent(t *testing.T) {
	f := newFixture(t, 2)
	failures := []error{
		rvError(p11.CKR_SESSION_HANDLE_INVALID), rvError(p11.CKR_DEVICE_ERROR),
		rvError(p11.CKR_USER_NOT_LOGGED_IN), dirtyError{rvError(p11.CKR_GENERAL_ERROR)},
		rvError(p11.CKR_TOKEN_NOT_PRESENT), nil,
	}
	const workers, rounds = 16, 12
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				want := failures[(w+r)%len(failures)]
				err := f.b.session(t.Context(), func(p11.SessionHandle) error { return want })
				if err != nil {
					failed.Add(1)
					if want == nil && !errors.Is(classify(err, hsm.ErrDecrypt), hsm.ErrUnavailable) {
						t.Errorf("a call that did not fail: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() == 0 {
		t.Error("no injected failure came back")
	}
	checkPool(t, f.b, false)
	for _, o := range f.ops(t) {
		if err := o.run(t.Context()); err != nil {
			t.Errorf("%s afterwards: %v", o.name, err)
		}
	}
	checkPool(t, f.b, true)
}

func TestSlowCallsDoNotHangCallers(t *testing.T) {
	f := newFixture(t, 2)
	// Two calls stuck inside the module hold both sessions.
	entered, unblock := make(chan struct{}), make(chan struct{})
	var stuck sync.WaitGroup
	for range 2 {
		stuck.Go(func() {
			err := f.b.session(t.Context(), func(p11.SessionHandle) error {
				entered <- struct{}{}
				<-unblock
				return nil
			})
			if err != nil {
				t.Errorf("stuck call: %v", err)
			}
		})
	}
	<-entered
	<-entered
	if st := f.b.Stats(); st.InUse != 2 || st.Max != 2 {
		t.Errorf("with two calls in flight: %+v", st)
	}

	// A caller without a deadline waits, and is counted.
	waiter := make(chan error, 1)
	go func() { waiter <- f.b.Ping(t.Context()) }()
	for f.b.Stats().Waiting != 1 {
		runtime.Gosched()
	}

	// Callers with deadlines give up when they end, while the stuck calls
	// still hold the sessions.
	var callers sync.WaitGroup
	for i := range 32 {
		callers.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Duration(1+i%5)*time.Millisecond)
			defer cancel()
			err := f.ops(t)[i%len(f.ops(t))].run(ctx)
			if !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("caller %d: %v, want ErrUnavailable and DeadlineExceeded", i, err)
			}
		})
	}
	callers.Wait()
	if st := f.b.Stats(); st.InUse != 2 || st.Waiting != 1 {
		t.Errorf("after the callers gave up: %+v, want 2 in use and 1 waiting", st)
	}

	close(unblock)
	stuck.Wait()
	if err := <-waiter; err != nil {
		t.Errorf("waiting Ping: %v", err)
	}
	checkPool(t, f.b, true)
}

func TestStats(t *testing.T) {
	f := newFixture(t, 3)
	if st := f.b.Stats(); st != (Stats{Idle: 1, Max: 3}) {
		t.Errorf("Stats of an idle Backend = %+v", st)
	}
	err := f.b.session(t.Context(), func(p11.SessionHandle) error {
		if st := f.b.Stats(); st != (Stats{InUse: 1, Max: 3}) {
			t.Errorf("Stats during a call = %+v", st)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := openToken(t, f.tok, 0).Stats(); st.Max != DefaultMaxSessions {
		t.Errorf("Stats of a default Backend = %+v", st)
	}
}

func TestGenerateKeyWaitHonoursContext(t *testing.T) {
	f := newFixture(t, 0)
	f.b.creating <- struct{}{} // another GenerateKey is running
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	_, err := f.b.GenerateKey(ctx, hsm.KeySpec{ID: hsmtest.NewID(t), Type: hsm.AES256})
	if !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GenerateKey behind another: %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	<-f.b.creating
	hsmtest.NewKey(t, f.b)
}
