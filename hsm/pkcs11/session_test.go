package pkcs11

import (
	"errors"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
)

func TestDeadSessionDropped(t *testing.T) {
	b, _ := newBackend(t)
	ctx := t.Context()
	id := hsmtest.NewKey(t, b)
	if n := idle(b); n != 1 {
		t.Fatalf("%d idle sessions, want 1", n)
	}
	// Close the pooled session behind the pool's back, as a token reset
	// would. It was the application's last session, so the token is also
	// logged out.
	s, err := b.pool.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.mod.ctx.CloseSession(s); err != nil {
		t.Fatal(err)
	}
	b.pool.put(s)

	nonce := hsmtest.NewNonce(t)
	ct, err := b.Seal(ctx, id, nonce, []byte("x"), nil)
	if err != nil {
		t.Fatalf("Seal after the session died: %v", err)
	}
	if _, err := b.Open(ctx, id, nonce, ct, nil); err != nil {
		t.Fatalf("Open after the session died: %v", err)
	}
	if n := idle(b); n != 1 {
		t.Errorf("%d idle sessions, want 1 (the dead one dropped)", n)
	}
	b.pool.mu.Lock()
	reused := b.pool.idle[0].h == s
	b.pool.mu.Unlock()
	if reused && s != 0 {
		// SoftHSM may hand out the same handle number again; only fail if
		// the session is still unusable.
		if _, err := b.mod.ctx.GetSessionInfo(s); err != nil {
			t.Errorf("dead session returned to the pool: %v", err)
		}
	}
}

func TestReloginAfterLogout(t *testing.T) {
	b, _ := newBackend(t)
	ctx := t.Context()
	id := hsmtest.NewKey(t, b)
	s, err := b.pool.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.mod.ctx.Logout(s); err != nil {
		t.Fatal(err)
	}
	b.pool.put(s)
	if _, err := b.Seal(ctx, id, hsmtest.NewNonce(t), []byte("x"), nil); err != nil {
		t.Fatalf("Seal after logout: %v", err)
	}

	s, err = b.pool.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.mod.ctx.Logout(s); err != nil {
		t.Fatal(err)
	}
	b.pool.put(s)
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping after logout: %v", err)
	}
	s, err = b.pool.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.mod.ctx.GetSessionInfo(s)
	b.pool.put(s)
	if err != nil || info.State != p11.CKS_RW_USER_FUNCTIONS {
		t.Errorf("session state after Ping: %d, %v", info.State, err)
	}
}

func TestPanicBecomesUnavailable(t *testing.T) {
	b, _ := newBackend(t)
	before := idle(b)
	err := b.session(t.Context(), func(p11.SessionHandle) error { panic("module exploded") })
	if err = classify(err, hsm.ErrDecrypt); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("panic: %v, want ErrUnavailable", err)
	}
	if n := idle(b); n != before-1 {
		t.Errorf("%d idle sessions after a panic, want %d (the session dropped)", n, before-1)
	}
	if err := b.Ping(t.Context()); err != nil {
		t.Fatalf("Ping after a panic: %v", err)
	}
}

func TestDecryptFailureKeepsSession(t *testing.T) {
	b, _ := newBackend(t)
	ctx := t.Context()
	id := hsmtest.NewKey(t, b)
	nonce := hsmtest.NewNonce(t)
	ct, err := b.Seal(ctx, id, nonce, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.pool.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.pool.put(s)
	ct[0] ^= 1
	if _, err := b.Open(ctx, id, nonce, ct, nil); !errors.Is(err, hsm.ErrDecrypt) {
		t.Fatalf("Open of a tampered ciphertext: %v", err)
	}
	b.pool.mu.Lock()
	kept := len(b.pool.idle) == 1 && b.pool.idle[0].h == s
	b.pool.mu.Unlock()
	if !kept {
		t.Error("an authentication failure cost the session")
	}
}

func TestModuleRefcount(t *testing.T) {
	b1, tok := newBackend(t)
	b2 := openToken(t, tok, 0)
	if b1.mod != b2.mod {
		t.Fatal("two Backends on one module loaded it twice")
	}
	modules.mu.Lock()
	refs := b1.mod.refs
	modules.mu.Unlock()
	if refs != 2 {
		t.Errorf("refs = %d, want 2", refs)
	}
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b1.Close(); err != nil { // idempotent: no second release
		t.Fatal(err)
	}
	modules.mu.Lock()
	refs = b2.mod.refs
	modules.mu.Unlock()
	if refs != 1 {
		t.Errorf("refs after one Close = %d, want 1", refs)
	}
	if err := b2.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}
