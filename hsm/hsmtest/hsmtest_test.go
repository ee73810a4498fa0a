package hsmtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/hsm"
)

func TestMemory(t *testing.T) {
	Exercise(t, func(t *testing.T) hsm.Backend { return NewMemory() })
}

func TestMemoryZeroValue(t *testing.T) {
	var m Memory
	id := NewKey(t, &m)
	nonce := NewNonce(t)
	ct, err := m.Seal(t.Context(), id, nonce, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Open(t.Context(), id, nonce, ct, nil); err != nil {
		t.Fatal(err)
	}
	var m2 Memory
	id, pub := NewKeyPair(t, &m2, hsm.Ed25519)
	sig, err := m2.Sign(t.Context(), id, []byte("x"), hsm.EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(pub, hsm.EdDSA, []byte("x"), sig); err != nil {
		t.Fatal(err)
	}
}

func TestFaultyPassesThrough(t *testing.T) {
	Exercise(t, func(t *testing.T) hsm.Backend { return NewFaulty(NewMemory()) })
}

func TestFaulty(t *testing.T) {
	ctx := t.Context()
	f := NewFaulty(NewMemory())
	id := NewKey(t, f)
	nonce := NewNonce(t)
	ct, err := f.Seal(ctx, id, nonce, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := NewKeyPair(t, f, hsm.ECP256)
	digest := SignInput(hsm.ECP256, hsm.ECDSA, []byte("x"))

	f.Fail(ErrDevice)
	_, err = f.Seal(ctx, id, nonce, []byte("x"), nil)
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Seal while failing: %v", err)
	}
	_, err = f.Open(ctx, id, nonce, ct, nil)
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Open while failing: %v", err)
	}
	if err := f.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Ping while failing: %v", err)
	}
	if ok, err := f.Exists(ctx, id); ok || !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Exists while failing: %v, %v", ok, err)
	}
	if _, err := f.Sign(ctx, ec, digest, hsm.ECDSA); !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Sign while failing: %v", err)
	}
	f.Fail(ErrDevice, MethodSign)
	if _, err := f.Sign(ctx, ec, digest, hsm.ECDSA); !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Sign while only Sign fails: %v", err)
	}
	if _, err := f.Seal(ctx, id, nonce, []byte("x"), nil); err != nil {
		t.Errorf("Seal while only Sign fails: %v", err)
	}

	f.Fail(ErrDevice, MethodRandom)
	if _, err := f.Random(ctx, 32); !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Random while only Random fails: %v", err)
	}
	if got := f.Calls(MethodRandom); got != 1 {
		t.Errorf("Calls(Random) = %d, want 1", got)
	}

	f.Fail(ErrDevice, MethodOpen)
	if _, err := f.Seal(ctx, id, nonce, []byte("x"), nil); err != nil {
		t.Errorf("Seal while only Open fails: %v", err)
	}
	if _, err := f.Open(ctx, id, nonce, ct, nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Open while only Open fails: %v", err)
	}

	f.Recover()
	if _, err := f.Open(ctx, id, nonce, ct, nil); err != nil {
		t.Errorf("Open after Recover: %v", err)
	}
	if got := f.Calls(MethodSeal); got != 4 {
		t.Errorf("Calls(Seal) = %d, want 4", got)
	}
	if got := f.Calls(MethodOpen); got != 3 {
		t.Errorf("Calls(Open) = %d, want 3", got)
	}
	if _, err := f.Sign(ctx, ec, digest, hsm.ECDSA); err != nil {
		t.Errorf("Sign after Recover: %v", err)
	}
	if got := f.Calls(MethodSign); got != 3 {
		t.Errorf("Calls(Sign) = %d, want 3", got)
	}
	if got := f.Calls(MethodGenerateKey); got != 2 {
		t.Errorf("Calls(GenerateKey) = %d, want 2", got)
	}
	f.ResetCalls()
	if f.TotalCalls() != 0 {
		t.Errorf("TotalCalls after ResetCalls = %d", f.TotalCalls())
	}
	if err := f.Close(); err != nil || f.Calls(MethodClose) != 1 || f.TotalCalls() != 0 {
		t.Errorf("Close: %v, Calls(Close) = %d", err, f.Calls(MethodClose))
	}
}

func TestFaultyConcurrent(t *testing.T) {
	f := NewFaulty(NewMemory())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			f.Fail(ErrDevice)
			f.Recover()
		}
	}()
	for range 100 {
		_ = f.Ping(context.Background())
	}
	<-done
	if got := f.Calls(MethodPing); got != 100 {
		t.Errorf("Calls(Ping) = %d, want 100", got)
	}
}

func TestFaultyErrors(t *testing.T) {
	for _, err := range []error{ErrDevice, ErrSessionInvalid, ErrNotLoggedIn} {
		if !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("%v does not wrap ErrUnavailable", err)
		}
		for _, other := range []error{hsm.ErrNotFound, hsm.ErrInvalid, hsm.ErrDecrypt, hsm.ErrExists} {
			if errors.Is(err, other) {
				t.Errorf("%v wraps %v", err, other)
			}
		}
	}
}

func TestFaultyFailNext(t *testing.T) {
	ctx := t.Context()
	f := NewFaulty(NewMemory())
	id := NewKey(t, f)
	f.FailNext(2, ErrSessionInvalid, MethodSeal)
	if err := f.Ping(ctx); err != nil {
		t.Errorf("Ping while only Seal fails: %v", err)
	}
	for i := range 2 {
		if _, err := f.Seal(ctx, id, NewNonce(t), []byte("x"), nil); !errors.Is(err, ErrSessionInvalid) {
			t.Errorf("Seal %d: %v, want ErrSessionInvalid", i, err)
		}
	}
	if _, err := f.Seal(ctx, id, NewNonce(t), []byte("x"), nil); err != nil {
		t.Errorf("third Seal: %v", err)
	}

	f.FailNext(1, ErrNotLoggedIn)
	if err := f.Ping(ctx); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("Ping: %v, want ErrNotLoggedIn", err)
	}
	if ok, err := f.Exists(ctx, id); !ok || err != nil {
		t.Errorf("Exists after the one failure: %v, %v", ok, err)
	}

	f.FailNext(5, ErrDevice)
	f.Recover()
	if err := f.Ping(ctx); err != nil {
		t.Errorf("Ping after Recover: %v", err)
	}
}

func TestFaultyDelay(t *testing.T) {
	f := NewFaulty(NewMemory())
	id := NewKey(t, f)
	// A delay far beyond the test timeout: only the context can end it.
	f.Delay(time.Hour, MethodDestroy, MethodPing)
	if _, err := f.Random(t.Context(), 8); err != nil {
		t.Errorf("Random while only Destroy and Ping are slow: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	err := f.Destroy(ctx, id)
	if !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow Destroy past its deadline: %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if ok, err := f.Exists(t.Context(), id); !ok || err != nil {
		t.Errorf("Destroy that timed out reached the Backend: Exists = %v, %v", ok, err)
	}
	err = f.Ping(canceled(t))
	if !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("slow Ping with a cancelled context: %v", err)
	}
	if n := f.Calls(MethodDestroy); n != 1 {
		t.Errorf("Calls(Destroy) = %d, want 1", n)
	}

	// A short delay passes, then the call goes on; a failure comes after it.
	f.Delay(time.Millisecond)
	if err := f.Ping(t.Context()); err != nil {
		t.Errorf("Ping with a short delay: %v", err)
	}
	f.Fail(ErrDevice, MethodPing)
	if err := f.Ping(t.Context()); !errors.Is(err, ErrDevice) {
		t.Errorf("slow failing Ping: %v, want ErrDevice", err)
	}
	f.Recover()
	f.Delay(time.Hour)
	f.Delay(0)
	if err := f.Destroy(t.Context(), id); err != nil {
		t.Errorf("Destroy after Delay(0): %v", err)
	}
}

func TestFaultyDelayConcurrent(t *testing.T) {
	f := NewFaulty(NewMemory())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			f.Delay(time.Hour)
			f.FailNext(3, ErrDevice)
			f.Recover()
		}
	}()
	ctx := canceled(t)
	for range 100 {
		if err := f.Ping(ctx); err != nil && !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("Ping: %v", err)
		}
	}
	<-done
}

func canceled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}
