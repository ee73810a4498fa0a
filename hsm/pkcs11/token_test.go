package pkcs11

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
)

// TestTokenGoneAndBack takes the token's directory away from SoftHSM and
// brings it back. SoftHSM 2.6.1 then serves the token as an empty, broken
// one: searches find nothing, cached handles fail with
// CKR_OBJECT_HANDLE_INVALID, C_GetTokenInfo fails with CKR_GENERAL_ERROR,
// and it stays so after the directory is back, until the module is
// initialised again, which gives the token another slot ID. The Backend
// must answer ErrUnavailable meanwhile, never ErrNotFound or a false
// Exists, and work again by itself, on the same keys, once the directory is
// back. Another Backend on another token of the module keeps working
// throughout, across the module resets.
func TestTokenGoneAndBack(t *testing.T) {
	t.Run("moved", func(t *testing.T) {
		testTokenGoneAndBack(t, func(dir string) (restore func() error) {
			// Out of the token directory: SoftHSM scans every
			// subdirectory of it when it initialises.
			away := filepath.Join(filepath.Dir(filepath.Dir(dir)), "away-"+filepath.Base(dir))
			if err := os.Rename(dir, away); err != nil {
				t.Fatal(err)
			}
			return func() error { return os.Rename(away, dir) }
		})
	})
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("skipping: root reads the token directory whatever its mode")
		}
		testTokenGoneAndBack(t, func(dir string) (restore func() error) {
			if err := os.Chmod(dir, 0); err != nil {
				t.Fatal(err)
			}
			return func() error { return os.Chmod(dir, 0o700) }
		})
	})
}

func testTokenGoneAndBack(t *testing.T, takeAway func(dir string) (restore func() error)) {
	f := newFixture(t, 4)
	other := newFixture(t, 2)
	fill(t, f.b, 4)
	dir := f.tok.Dir(t)
	restore := takeAway(dir)
	gone := true
	t.Cleanup(func() {
		if gone {
			if err := restore(); err != nil {
				t.Errorf("restoring the token directory: %v", err)
			}
		}
	})

	for round := range 2 {
		for _, o := range f.ops(t) {
			err := o.run(t.Context())
			if err != nil && (!errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrNotFound)) {
				t.Errorf("round %d: %s with the token gone: %v, want success or ErrUnavailable only", round, o.name, err)
			}
		}
		if err := f.b.Ping(t.Context()); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("round %d: Ping with the token gone: %v, want ErrUnavailable", round, err)
		}
		for _, o := range other.ops(t) {
			if err := o.run(t.Context()); err != nil {
				t.Errorf("round %d: %s on the other token: %v", round, o.name, err)
			}
		}
	}

	if err := restore(); err != nil {
		t.Fatal(err)
	}
	gone = false
	for _, o := range f.ops(t) {
		if err := o.run(t.Context()); err != nil {
			t.Errorf("%s with the token back: %v", o.name, err)
		}
	}
	for _, o := range other.ops(t) {
		if err := o.run(t.Context()); err != nil {
			t.Errorf("%s on the other token: %v", o.name, err)
		}
	}
	checkPool(t, f.b, true)
	checkPool(t, other.b, true)
}

// TestResetDropsCachedHandles checks that a handle cached before a module
// reset is never used after it: the module may give its number to another
// object.
func TestResetDropsCachedHandles(t *testing.T) {
	f := newFixture(t, 2)
	ctx := t.Context()
	v, ok := f.b.handles.Load(string(f.aes))
	if !ok {
		t.Fatal("AES key not cached after Seal")
	}
	old := v.(key)
	if !f.b.mod.reset() {
		t.Fatal("reset did not run with no call in flight")
	}
	if err := f.b.Ping(ctx); err != nil {
		t.Fatalf("Ping after a reset: %v", err)
	}
	if _, ok := f.b.handles.Load(string(f.aes)); ok {
		t.Error("cached handles survived the reset")
	}
	// A lookup that raced with the reset could store a handle of the old
	// generation, whose number the module may have given to another
	// object: here, another AES key's.
	other := hsmtest.NewKey(t, f.b)
	v, _ = f.b.handles.Load(string(other))
	cur := v.(key)
	f.b.handles.Store(string(f.aes), key{h: cur.h, class: cur.class, typ: cur.typ, gen: old.gen})
	nonce := hsmtest.NewNonce(t)
	ct, err := f.b.Seal(ctx, f.aes, nonce, []byte("x"), nil)
	if err != nil {
		t.Fatalf("Seal with an old cached handle: %v", err)
	}
	if _, err := f.b.Open(ctx, other, nonce, ct, nil); !errors.Is(err, hsm.ErrDecrypt) {
		t.Errorf("Seal used the object that inherited the old handle: Open under it: %v", err)
	}
	if pt, err := f.b.Open(ctx, f.aes, nonce, ct, nil); err != nil || string(pt) != "x" {
		t.Errorf("Open: %q, %v", pt, err)
	}
	for _, o := range f.ops(t) {
		if err := o.run(ctx); err != nil {
			t.Errorf("%s after a reset: %v", o.name, err)
		}
	}
	checkPool(t, f.b, true)
}
