package hsmtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sigil-kms/sigil/hsm"
)

// Exercise runs the hsm.Backend conformance suite. newBackend returns a
// fresh, empty Backend for each subtest and arranges for it to be closed.
func Exercise(t *testing.T, newBackend func(t *testing.T) hsm.Backend) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, newBackend(t)) })
	t.Run("DecryptFailures", func(t *testing.T) { testDecryptFailures(t, newBackend(t)) })
	t.Run("Invalid", func(t *testing.T) { testInvalid(t, newBackend(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, newBackend(t)) })
	t.Run("Exists", func(t *testing.T) { testExists(t, newBackend(t)) })
	t.Run("Ping", func(t *testing.T) {
		if err := newBackend(t).Ping(t.Context()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
	t.Run("Random", func(t *testing.T) { testRandom(t, newBackend(t)) })
	t.Run("Canceled", func(t *testing.T) { testCanceled(t, newBackend(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newBackend(t)) })
	exerciseSigning(t, newBackend)
}

// NewID returns a random key identifier.
func NewID(t testing.TB) []byte { return random(t, hsm.IDSize) }

// NewNonce returns a random nonce.
func NewNonce(t testing.TB) []byte { return random(t, hsm.NonceSize) }

func random(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// NewKey generates an AES256 key on b and returns its identifier.
func NewKey(t testing.TB, b hsm.Backend) []byte {
	t.Helper()
	id := NewID(t)
	spec := hsm.KeySpec{ID: id, Label: fmt.Sprintf("sigil:test:%x", id[:4]), Type: hsm.AES256}
	pub, err := b.GenerateKey(context.Background(), spec)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if pub != nil {
		t.Fatalf("GenerateKey(AES256) returned a %T public key", pub)
	}
	return id
}

// errOf returns GenerateKey's error, for checks that ignore the public key.
func errOf(_ crypto.PublicKey, err error) error { return err }

// wantErr fails the test unless errors.Is(err, want).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: err = %v, want %v", what, err, want)
	}
}

func testRoundTrip(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	id := NewKey(t, b)
	cases := []struct {
		name          string
		plaintext, ad []byte
	}{
		{"empty", nil, nil},
		{"empty plaintext", nil, []byte("aad")},
		{"empty aad", []byte("hello"), nil},
		{"both", []byte("hello"), []byte("aad")},
		{"1KiB", random(t, 1024), random(t, 100)},
		{"64KiB", random(t, 64<<10), []byte("aad")},
	}
	for _, c := range cases {
		nonce := NewNonce(t)
		ct, err := b.Seal(ctx, id, nonce, c.plaintext, c.ad)
		if err != nil {
			t.Errorf("%s: Seal: %v", c.name, err)
			continue
		}
		if len(ct) != len(c.plaintext)+hsm.TagSize {
			t.Errorf("%s: ciphertext is %d bytes, want %d", c.name, len(ct), len(c.plaintext)+hsm.TagSize)
		}
		if len(c.plaintext) > 0 && bytes.Contains(ct, c.plaintext) {
			t.Errorf("%s: ciphertext contains the plaintext", c.name)
		}
		pt, err := b.Open(ctx, id, nonce, ct, c.ad)
		if err != nil {
			t.Errorf("%s: Open: %v", c.name, err)
			continue
		}
		if !bytes.Equal(pt, c.plaintext) {
			t.Errorf("%s: Open returned different plaintext", c.name)
		}
	}
	n1, n2 := NewNonce(t), NewNonce(t)
	c1, err1 := b.Seal(ctx, id, n1, []byte("same"), nil)
	c2, err2 := b.Seal(ctx, id, n2, []byte("same"), nil)
	if err1 != nil || err2 != nil || bytes.Equal(c1, c2) {
		t.Errorf("two nonces gave the same ciphertext (errs %v, %v)", err1, err2)
	}
}

func testDecryptFailures(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	id, other := NewKey(t, b), NewKey(t, b)
	nonce, aad, msg := NewNonce(t), []byte("context"), []byte("attack at dawn")
	ct, err := b.Seal(ctx, id, nonce, msg, aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	otherCT, err := b.Seal(ctx, other, nonce, msg, aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	flip := func(i int) []byte {
		c := bytes.Clone(ct)
		c[i] ^= 0x01
		return c
	}
	cases := []struct {
		name           string
		id, nonce, aad []byte
		ct             []byte
	}{
		{"wrong aad", id, nonce, []byte("other"), ct},
		{"missing aad", id, nonce, nil, ct},
		{"flipped ciphertext byte", id, nonce, aad, flip(0)},
		{"flipped tag byte", id, nonce, aad, flip(len(ct) - 1)},
		{"wrong nonce", id, NewNonce(t), aad, ct},
		{"truncated", id, nonce, aad, ct[:len(ct)-1]},
		{"tag only", id, nonce, aad, ct[len(ct)-hsm.TagSize:]},
		{"shorter than tag", id, nonce, aad, ct[:hsm.TagSize-1]},
		{"empty", id, nonce, aad, nil},
		{"appended byte", id, nonce, aad, append(bytes.Clone(ct), 0)},
		{"other key's ciphertext", id, nonce, aad, otherCT},
		{"ciphertext under other key", other, nonce, aad, ct},
	}
	for _, c := range cases {
		pt, err := b.Open(ctx, c.id, c.nonce, c.ct, c.aad)
		wantErr(t, c.name, err, hsm.ErrDecrypt)
		if pt != nil {
			t.Errorf("%s: Open returned plaintext with the error", c.name)
		}
	}
	// Failures leave no broken state behind.
	for range 3 {
		pt, err := b.Open(ctx, id, nonce, ct, aad)
		if err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("Open after failures: %v", err)
		}
	}
}

func testInvalid(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	id := NewKey(t, b)
	ct, err := b.Seal(ctx, id, NewNonce(t), []byte("x"), nil)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	for _, n := range []int{0, 8, hsm.NonceSize - 1, hsm.NonceSize + 1, 16} {
		nonce := make([]byte, n)
		_, err := b.Seal(ctx, id, nonce, []byte("x"), nil)
		wantErr(t, fmt.Sprintf("Seal with %d-byte nonce", n), err, hsm.ErrInvalid)
		_, err = b.Open(ctx, id, nonce, ct, nil)
		wantErr(t, fmt.Sprintf("Open with %d-byte nonce", n), err, hsm.ErrInvalid)
	}
	for _, n := range []int{0, 1, hsm.IDSize - 1, hsm.IDSize + 1, 32} {
		bad := make([]byte, n)
		what := fmt.Sprintf(" with %d-byte id", n)
		wantErr(t, "GenerateKey"+what, errOf(b.GenerateKey(ctx, hsm.KeySpec{ID: bad, Type: hsm.AES256})), hsm.ErrInvalid)
		_, err := b.Seal(ctx, bad, NewNonce(t), []byte("x"), nil)
		wantErr(t, "Seal"+what, err, hsm.ErrInvalid)
		_, err = b.Open(ctx, bad, NewNonce(t), ct, nil)
		wantErr(t, "Open"+what, err, hsm.ErrInvalid)
		wantErr(t, "Destroy"+what, b.Destroy(ctx, bad), hsm.ErrInvalid)
		_, err = b.Exists(ctx, bad)
		wantErr(t, "Exists"+what, err, hsm.ErrInvalid)
	}
	for _, typ := range []hsm.KeyType{0, 99} {
		err := errOf(b.GenerateKey(ctx, hsm.KeySpec{ID: NewID(t), Type: typ}))
		wantErr(t, fmt.Sprintf("GenerateKey type %d", typ), err, hsm.ErrInvalid)
	}
}

func testNotFound(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	NewKey(t, b) // the backend is not empty
	id := NewID(t)
	_, err := b.Seal(ctx, id, NewNonce(t), []byte("x"), nil)
	wantErr(t, "Seal", err, hsm.ErrNotFound)
	_, err = b.Open(ctx, id, NewNonce(t), make([]byte, 40), nil)
	wantErr(t, "Open", err, hsm.ErrNotFound)
	wantErr(t, "Destroy", b.Destroy(ctx, id), hsm.ErrNotFound)
	if ok, err := b.Exists(ctx, id); ok || err != nil {
		t.Errorf("Exists(unknown) = %v, %v", ok, err)
	}
}

func testExists(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	id := NewID(t)
	if ok, err := b.Exists(ctx, id); ok || err != nil {
		t.Fatalf("Exists before GenerateKey = %v, %v", ok, err)
	}
	spec := hsm.KeySpec{ID: id, Label: "sigil:test:v1", Type: hsm.AES256}
	if err := errOf(b.GenerateKey(ctx, spec)); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	wantErr(t, "second GenerateKey", errOf(b.GenerateKey(ctx, spec)), hsm.ErrExists)
	if ok, err := b.Exists(ctx, id); !ok || err != nil {
		t.Fatalf("Exists after GenerateKey = %v, %v", ok, err)
	}
	nonce := NewNonce(t)
	ct, err := b.Seal(ctx, id, nonce, []byte("x"), nil)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if err := b.Destroy(ctx, id); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if ok, err := b.Exists(ctx, id); ok || err != nil {
		t.Errorf("Exists after Destroy = %v, %v", ok, err)
	}
	_, err = b.Open(ctx, id, nonce, ct, nil)
	wantErr(t, "Open after Destroy", err, hsm.ErrNotFound)
	_, err = b.Seal(ctx, id, nonce, []byte("x"), nil)
	wantErr(t, "Seal after Destroy", err, hsm.ErrNotFound)
	wantErr(t, "second Destroy", b.Destroy(ctx, id), hsm.ErrNotFound)
}

func testRandom(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	for _, n := range []int{1, 16, 32, 1024} {
		r, err := b.Random(ctx, n)
		if err != nil {
			t.Errorf("Random(%d): %v", n, err)
			continue
		}
		if len(r) != n {
			t.Errorf("Random(%d) returned %d bytes", n, len(r))
		}
	}
	r1, err1 := b.Random(ctx, 32)
	r2, err2 := b.Random(ctx, 32)
	if err1 != nil || err2 != nil || bytes.Equal(r1, r2) {
		t.Errorf("two calls to Random(32) gave the same bytes (errs %v, %v)", err1, err2)
	}
	for _, n := range []int{-1, 0, 1025, 1 << 20} {
		r, err := b.Random(ctx, n)
		wantErr(t, fmt.Sprintf("Random(%d)", n), err, hsm.ErrInvalid)
		if r != nil {
			t.Errorf("Random(%d) returned bytes with the error", n)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err := b.Random(canceled, 32)
	wantErr(t, "Random with a cancelled context", err, context.Canceled)
}

func testCanceled(t *testing.T, b hsm.Backend) {
	id := NewKey(t, b)
	ct, err := b.Seal(t.Context(), id, make([]byte, hsm.NonceSize), []byte("x"), nil)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	// A cancelled call is both an availability failure and the context's.
	want := func(what string, err error) {
		t.Helper()
		wantErr(t, what, err, context.Canceled)
		wantErr(t, what, err, hsm.ErrUnavailable)
	}
	nonce := make([]byte, hsm.NonceSize)
	_, err = b.Seal(ctx, id, nonce, []byte("x"), nil)
	want("Seal", err)
	_, err = b.Open(ctx, id, nonce, ct, nil)
	want("Open", err)
	_, err = b.Seal(ctx, NewID(t), nonce, []byte("x"), nil)
	want("Seal on an uncached id", err)
	want("GenerateKey", errOf(b.GenerateKey(ctx, hsm.KeySpec{ID: NewID(t), Type: hsm.AES256})))
	_, err = b.Exists(ctx, id)
	want("Exists", err)
	want("Destroy", b.Destroy(ctx, id))
	want("Ping", b.Ping(ctx))
	_, err = b.Random(ctx, 16)
	want("Random", err)
	if ok, err := b.Exists(t.Context(), id); !ok || err != nil {
		t.Errorf("key gone after a cancelled Destroy: %v, %v", ok, err)
	}
}

func testConcurrent(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	keys := [][]byte{NewKey(t, b), NewKey(t, b)}
	const workers, rounds = 32, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := keys[w%len(keys)]
			for r := range rounds {
				msg := fmt.Appendf(nil, "worker %d round %d", w, r)
				aad := fmt.Appendf(nil, "aad %d", w)
				nonce := make([]byte, hsm.NonceSize)
				rand.Read(nonce) // never fails (Go 1.24+)
				ct, err := b.Seal(ctx, id, nonce, msg, aad)
				if err != nil {
					t.Errorf("worker %d: Seal: %v", w, err)
					return
				}
				pt, err := b.Open(ctx, id, nonce, ct, aad)
				if err != nil || !bytes.Equal(pt, msg) {
					t.Errorf("worker %d: Open = %q, %v", w, pt, err)
					return
				}
				if r%5 == 0 {
					if _, err := b.Open(ctx, id, nonce, ct, nil); !errors.Is(err, hsm.ErrDecrypt) {
						t.Errorf("worker %d: Open with wrong aad: %v", w, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}
