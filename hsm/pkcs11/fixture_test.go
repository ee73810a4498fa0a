package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/softhsm"
)

// fixture is a Backend on a fresh token with an AES key, an ECDSA key and a
// ciphertext, for checking that every operation still works.
type fixture struct {
	b         *Backend
	tok       *softhsm.Token
	aes, ec   []byte
	pub       crypto.PublicKey
	nonce, ct []byte
}

func newFixture(t *testing.T, maxSessions int) *fixture {
	t.Helper()
	tok := softhsm.NewToken(t)
	f := &fixture{b: openToken(t, tok, maxSessions), tok: tok, nonce: hsmtest.NewNonce(t)}
	f.aes = hsmtest.NewKey(t, f.b)
	f.ec, f.pub = hsmtest.NewKeyPair(t, f.b, hsm.ECP256)
	var err error
	if f.ct, err = f.b.Seal(t.Context(), f.aes, f.nonce, []byte("fixture"), []byte("aad")); err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return f
}

// errWrong marks a call that succeeded with a wrong answer.
var errWrong = errors.New("wrong answer")

// op is one Backend operation on a fixture. run returns the call's error,
// or one wrapping errWrong if the call succeeded with a wrong result.
type op struct {
	name string
	run  func(ctx context.Context) error
}

// ops returns one op per Backend method, each checking its result. Exists
// and Seal run both on a cached handle and after forgetting it.
func (f *fixture) ops(t *testing.T) []op {
	exists := func(ctx context.Context, id []byte) error {
		ok, err := f.b.Exists(ctx, id)
		if err == nil && !ok {
			return fmt.Errorf("%w: Exists = false", errWrong)
		}
		return err
	}
	return []op{
		{"Seal", func(ctx context.Context) error {
			_, err := f.b.Seal(ctx, f.aes, hsmtest.NewNonce(t), []byte("x"), nil)
			return err
		}},
		{"Seal uncached", func(ctx context.Context) error {
			f.b.handles.Delete(string(f.aes))
			_, err := f.b.Seal(ctx, f.aes, hsmtest.NewNonce(t), []byte("x"), nil)
			return err
		}},
		{"Open", func(ctx context.Context) error {
			pt, err := f.b.Open(ctx, f.aes, f.nonce, f.ct, []byte("aad"))
			if err == nil && string(pt) != "fixture" {
				return fmt.Errorf("%w: Open = %q", errWrong, pt)
			}
			return err
		}},
		{"Sign", func(ctx context.Context) error {
			digest := hsmtest.SignInput(hsm.ECP256, hsm.ECDSA, []byte("m"))
			sig, err := f.b.Sign(ctx, f.ec, digest, hsm.ECDSA)
			if err == nil {
				if verr := hsmtest.Verify(f.pub, hsm.ECDSA, digest, sig); verr != nil {
					return fmt.Errorf("%w: %v", errWrong, verr)
				}
			}
			return err
		}},
		{"Exists", func(ctx context.Context) error { return exists(ctx, f.aes) }},
		{"Exists uncached", func(ctx context.Context) error {
			f.b.handles.Delete(string(f.ec))
			return exists(ctx, f.ec)
		}},
		{"GenerateKey and Destroy", func(ctx context.Context) error {
			id := hsmtest.NewID(t)
			if _, err := f.b.GenerateKey(ctx, hsm.KeySpec{ID: id, Label: "fault", Type: hsm.AES256}); err != nil {
				return err
			}
			return f.b.Destroy(ctx, id)
		}},
		{"Random", func(ctx context.Context) error {
			r, err := f.b.Random(ctx, 32)
			if err == nil && (len(r) != 32 || bytes.Equal(r, make([]byte, 32))) {
				return fmt.Errorf("%w: Random = %x", errWrong, r)
			}
			return err
		}},
		{"Ping", f.b.Ping},
	}
}

// fill makes the pool hold n idle sessions.
func fill(t *testing.T, b *Backend, n int) {
	t.Helper()
	var held []p11.SessionHandle
	for range n {
		s, err := b.pool.get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
	}
	for _, s := range held {
		b.pool.put(s)
	}
	if got := b.Stats().Idle; got != n {
		t.Fatalf("%d idle sessions, want %d", got, n)
	}
}

// idleHandles returns the pool's idle sessions.
func idleHandles(b *Backend) []p11.SessionHandle {
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	var hs []p11.SessionHandle
	for _, is := range b.pool.idle {
		hs = append(hs, is.h)
	}
	return hs
}

// checkPool fails the test unless no session is in use or awaited and every
// idle session is alive, and, if loggedIn, logged in.
func checkPool(t *testing.T, b *Backend, loggedIn bool) {
	t.Helper()
	st := b.Stats()
	if st.InUse != 0 || st.Waiting != 0 {
		t.Errorf("after the calls: %+v, want no session in use or awaited", st)
	}
	seen := make(map[p11.SessionHandle]bool)
	for _, s := range idleHandles(b) {
		if seen[s] {
			t.Errorf("session %d pooled twice", s)
		}
		seen[s] = true
		info, err := b.mod.ctx.GetSessionInfo(s)
		if err != nil {
			t.Errorf("dead session %d in the pool: %v", s, err)
		} else if loggedIn && info.State != p11.CKS_RW_USER_FUNCTIONS {
			t.Errorf("session %d in state %d, want logged in", s, info.State)
		}
	}
}

// idle returns the number of idle sessions in b's pool.
func idle(b *Backend) int { return b.Stats().Idle }
