package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/client"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	s.createKey(t, "files", sigilv1.Algorithm_ALGORITHM_AES_256_GCM)
	s.createKey(t, "other", sigilv1.Algorithm_ALGORITHM_AES_256_GCM)
	env := s.c.Envelope("files", client.EnvelopeOptions{})
	big := make([]byte, 3<<20) // far over the 64 KiB Encrypt limit
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	for _, pt := range [][]byte{nil, []byte("small"), big} {
		sealed, err := env.Seal(ctx, pt, []byte("row 7"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := env.Open(ctx, sealed, []byte("row 7"))
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Open of %d bytes: %v", len(pt), err)
		}
	}
	sealed, err := env.Seal(ctx, []byte("secret"), []byte("row 7"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Open(ctx, sealed, []byte("row 8")); !errors.Is(err, client.ErrEnvelope) {
		t.Errorf("wrong associated data: %v", err)
	}
	for i := range sealed {
		c := bytes.Clone(sealed)
		c[i] ^= 1
		_, err := env.Open(ctx, c, []byte("row 7"))
		if err == nil {
			t.Fatalf("flipped byte %d opened", i)
		}
		if !errors.Is(err, client.ErrEnvelope) {
			t.Fatalf("flipped byte %d: %v, want ErrEnvelope", i, err)
		}
	}
	if _, err := s.c.Envelope("other", client.EnvelopeOptions{}).Open(ctx, sealed, []byte("row 7")); !errors.Is(err, client.ErrEnvelope) {
		t.Errorf("another key's envelope: %v", err)
	}
	// The wrapped data key is not a general Sigil ciphertext: Decrypt
	// without the envelope context refuses it.
	n := int(sealed[1])<<8 | int(sealed[2])
	if _, err := s.c.Decrypt(ctx, "files", sealed[3:3+n], nil); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("wrapped key decrypted without its context: %v", err)
	}
}

func TestEnvelopeCache(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	s.createKey(t, "files", sigilv1.Algorithm_ALGORITHM_AES_256_GCM)
	env := s.c.Envelope("files", client.EnvelopeOptions{MaxAge: time.Hour, MaxMessages: 3})
	var sealed [][]byte
	for i := 0; i < 7; i++ {
		b, err := env.Seal(ctx, []byte{byte(i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, b)
	}
	if n := s.hsm.Calls("Random"); n != 3 {
		t.Fatalf("7 messages with at most 3 per data key used %d data keys, want 3", n)
	}
	opens := s.hsm.Calls("Open")
	for round := 0; round < 2; round++ {
		for i, b := range sealed {
			pt, err := env.Open(ctx, b, nil)
			if err != nil || pt[0] != byte(i) {
				t.Fatalf("Open %d: %v", i, err)
			}
		}
	}
	if n := s.hsm.Calls("Open") - opens; n != 3 {
		t.Fatalf("opening 14 envelopes under 3 data keys made %d unwraps, want 3", n)
	}
	// Without caching, every Seal gets a fresh data key.
	plain := s.c.Envelope("files", client.EnvelopeOptions{})
	before := s.hsm.Calls("Random")
	for i := 0; i < 2; i++ {
		if _, err := plain.Seal(ctx, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.hsm.Calls("Random") - before; n != 2 {
		t.Fatalf("uncached seals used %d data keys, want 2", n)
	}
}
