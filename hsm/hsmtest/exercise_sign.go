package hsmtest

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"sync"
	"testing"

	"github.com/sigil-kms/sigil/hsm"
)

// exerciseSigning runs the signing part of the conformance suite.
func exerciseSigning(t *testing.T, newBackend func(t *testing.T) hsm.Backend) {
	t.Run("Sign", func(t *testing.T) { testSign(t, newBackend(t)) })
	t.Run("SignMisuse", func(t *testing.T) { testSignMisuse(t, newBackend(t)) })
	t.Run("SignLifecycle", func(t *testing.T) { testSignLifecycle(t, newBackend(t)) })
	t.Run("SignConcurrent", func(t *testing.T) { testSignConcurrent(t, newBackend(t)) })
}

// testSign generates one key pair of every type, RSA-4096 included, which
// is slow in a software token; no other test generates one.
func testSign(t *testing.T, b hsm.Backend) {
	for _, typ := range KeyPairTypes {
		t.Run(typ.String(), func(t *testing.T) {
			id, pub := NewKeyPair(t, b, typ)
			for _, m := range Mechanisms {
				checkSign(t, b, typ, id, pub, m)
			}
		})
	}
}

// checkSign signs with mechanism m and checks the signature, or that the
// key refuses m.
func checkSign(t *testing.T, b hsm.Backend, typ hsm.KeyType, id []byte, pub crypto.PublicKey, m hsm.Mechanism) {
	t.Helper()
	ctx := t.Context()
	for _, msg := range [][]byte{[]byte("sigil"), nil, random(t, 4096)} {
		input := SignInput(typ, m, msg)
		sig, err := b.Sign(ctx, id, input, m)
		if !CanSign(typ, m) {
			wantErr(t, fmt.Sprintf("%v key, mechanism %d", typ, int(m)), err, hsm.ErrInvalid)
			if sig != nil {
				t.Errorf("%v key, mechanism %d: signature returned with the error", typ, int(m))
			}
			return
		}
		if err != nil {
			t.Errorf("Sign(%v, mechanism %d, %d-byte message): %v", typ, int(m), len(msg), err)
			continue
		}
		if err := Verify(pub, m, input, sig); err != nil {
			t.Errorf("%v, mechanism %d, %d-byte message: %v", typ, int(m), len(msg), err)
		}
		flipped := bytes.Clone(input)
		if len(flipped) > 0 {
			flipped[len(flipped)-1] ^= 0x01
			if Verify(pub, m, flipped, sig) == nil {
				t.Errorf("%v, mechanism %d: signature verifies for a flipped input", typ, int(m))
			}
		}
		bad := bytes.Clone(sig)
		bad[len(bad)/2] ^= 0x80
		if Verify(pub, m, input, bad) == nil {
			t.Errorf("%v, mechanism %d: a flipped signature bit still verifies", typ, int(m))
		}
	}
}

// testSignMisuse checks that keys are used only for their purpose and that
// malformed requests are refused.
func testSignMisuse(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	aesID := NewKey(t, b)
	ecID, _ := NewKeyPair(t, b, hsm.ECP256)
	edID, _ := NewKeyPair(t, b, hsm.Ed25519)
	rsaID, _ := NewKeyPair(t, b, hsm.RSA2048)
	msg := []byte("message")

	for _, m := range Mechanisms {
		_, err := b.Sign(ctx, aesID, SignInput(hsm.RSA2048, m, msg), m)
		wantErr(t, fmt.Sprintf("Sign with an AES key, mechanism %d", int(m)), err, hsm.ErrInvalid)
		_, err = b.Sign(ctx, NewID(t), SignInput(hsm.RSA2048, m, msg), m)
		wantErr(t, fmt.Sprintf("Sign with an unknown key, mechanism %d", int(m)), err, hsm.ErrNotFound)
	}
	for _, m := range []hsm.Mechanism{0, 99} {
		_, err := b.Sign(ctx, ecID, SignInput(hsm.ECP256, hsm.ECDSA, msg), m)
		wantErr(t, fmt.Sprintf("Sign with mechanism %d", int(m)), err, hsm.ErrInvalid)
	}
	for _, n := range []int{0, 20, 31, 33, 48, 64} {
		for _, m := range []hsm.Mechanism{hsm.RSAPSSSHA256, hsm.RSAPKCS1SHA256} {
			_, err := b.Sign(ctx, rsaID, make([]byte, n), m)
			wantErr(t, fmt.Sprintf("Sign(mechanism %d) of a %d-byte digest", int(m), n), err, hsm.ErrInvalid)
		}
	}
	_, err := b.Sign(ctx, ecID, nil, hsm.ECDSA)
	wantErr(t, "Sign(ECDSA) of an empty digest", err, hsm.ErrInvalid)
	for _, n := range []int{0, 1, hsm.IDSize - 1, hsm.IDSize + 1} {
		_, err := b.Sign(ctx, make([]byte, n), msg, hsm.EdDSA)
		wantErr(t, fmt.Sprintf("Sign with a %d-byte id", n), err, hsm.ErrInvalid)
	}

	// A signing key never encrypts or decrypts.
	nonce := NewNonce(t)
	for _, id := range [][]byte{ecID, edID, rsaID} {
		ct, err := b.Seal(ctx, id, nonce, []byte("x"), nil)
		wantErr(t, "Seal with a signing key", err, hsm.ErrInvalid)
		if ct != nil {
			t.Error("Seal with a signing key returned a ciphertext")
		}
		_, err = b.Open(ctx, id, nonce, make([]byte, 40), nil)
		wantErr(t, "Open with a signing key", err, hsm.ErrInvalid)
	}

	// Identifiers are unique across key types.
	for _, c := range []struct {
		id  []byte
		typ hsm.KeyType
	}{{ecID, hsm.ECP256}, {ecID, hsm.Ed25519}, {aesID, hsm.ECP256}, {edID, hsm.AES256}, {rsaID, hsm.RSA2048}} {
		pub, err := b.GenerateKey(ctx, hsm.KeySpec{ID: c.id, Label: "sigil:test:dup", Type: c.typ})
		wantErr(t, fmt.Sprintf("GenerateKey(%v) with a taken id", c.typ), err, hsm.ErrExists)
		if pub != nil {
			t.Errorf("GenerateKey(%v) with a taken id returned a public key", c.typ)
		}
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.Sign(canceled, edID, msg, hsm.EdDSA)
	wantErr(t, "Sign with a cancelled context", err, context.Canceled)
	_, err = b.GenerateKey(canceled, hsm.KeySpec{ID: NewID(t), Type: hsm.ECP256})
	wantErr(t, "GenerateKey(ECP256) with a cancelled context", err, context.Canceled)

	// The refusals left the keys usable.
	if _, err := b.Sign(ctx, edID, msg, hsm.EdDSA); err != nil {
		t.Errorf("Sign after refusals: %v", err)
	}
	if _, err := b.Seal(ctx, aesID, nonce, []byte("x"), nil); err != nil {
		t.Errorf("Seal after refusals: %v", err)
	}
}

// testSignLifecycle checks Exists and Destroy on key pairs.
func testSignLifecycle(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	for _, typ := range []hsm.KeyType{hsm.ECP256, hsm.Ed25519} {
		id, _ := NewKeyPair(t, b, typ)
		m := hsm.ECDSA
		if typ == hsm.Ed25519 {
			m = hsm.EdDSA
		}
		input := SignInput(typ, m, []byte("x"))
		if ok, err := b.Exists(ctx, id); !ok || err != nil {
			t.Errorf("Exists(%v) = %v, %v", typ, ok, err)
		}
		if err := b.Destroy(ctx, id); err != nil {
			t.Fatalf("Destroy(%v): %v", typ, err)
		}
		if ok, err := b.Exists(ctx, id); ok || err != nil {
			t.Errorf("Exists(%v) after Destroy = %v, %v", typ, ok, err)
		}
		_, err := b.Sign(ctx, id, input, m)
		wantErr(t, fmt.Sprintf("Sign(%v) after Destroy", typ), err, hsm.ErrNotFound)
		wantErr(t, fmt.Sprintf("second Destroy(%v)", typ), b.Destroy(ctx, id), hsm.ErrNotFound)

		// The identifier can be used again, for a new key.
		pub, err := b.GenerateKey(ctx, hsm.KeySpec{ID: id, Label: "sigil:test:again", Type: typ})
		if err != nil {
			t.Fatalf("GenerateKey(%v) after Destroy: %v", typ, err)
		}
		sig, err := b.Sign(ctx, id, input, m)
		if err != nil {
			t.Fatalf("Sign(%v) with the new key: %v", typ, err)
		}
		if err := Verify(pub, m, input, sig); err != nil {
			t.Errorf("%v: the new key's signature: %v", typ, err)
		}
	}
}

// testSignConcurrent signs from many goroutines with keys of two types.
func testSignConcurrent(t *testing.T, b hsm.Backend) {
	ctx := t.Context()
	type pair struct {
		typ hsm.KeyType
		m   hsm.Mechanism
		id  []byte
		pub crypto.PublicKey
	}
	var pairs []pair
	for _, p := range []pair{{typ: hsm.ECP256, m: hsm.ECDSA}, {typ: hsm.Ed25519, m: hsm.EdDSA}} {
		p.id, p.pub = NewKeyPair(t, b, p.typ)
		pairs = append(pairs, p)
	}
	const workers, rounds = 16, 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			p := pairs[w%len(pairs)]
			for r := range rounds {
				input := SignInput(p.typ, p.m, fmt.Appendf(nil, "worker %d round %d", w, r))
				sig, err := b.Sign(ctx, p.id, input, p.m)
				if err != nil {
					t.Errorf("worker %d: Sign: %v", w, err)
					return
				}
				if err := Verify(p.pub, p.m, input, sig); err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
