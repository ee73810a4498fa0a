package hsmtest

import (
	"context"
	"errors"
	"testing"

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
