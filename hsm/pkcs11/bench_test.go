package pkcs11

import (
	"crypto/rand"
	"testing"

	"github.com/sigil-kms/sigil/hsm/hsmtest"
)

// benchKey opens a Backend on a fresh SoftHSM token with one key and
// returns it with a 1 KiB plaintext, nonce, aad and their ciphertext.
func benchKey(b *testing.B) (be *Backend, id, nonce, msg, aad, ct []byte) {
	b.Helper()
	be, _ = newBackend(b)
	id = hsmtest.NewKey(b, be)
	nonce, msg, aad = hsmtest.NewNonce(b), make([]byte, 1024), []byte("sigil:bench")
	rand.Read(msg)
	ct, err := be.Seal(b.Context(), id, nonce, msg, aad)
	if err != nil {
		b.Fatal(err)
	}
	return be, id, nonce, msg, aad, ct
}

func BenchmarkSeal1KiB(b *testing.B) {
	be, id, nonce, msg, aad, _ := benchKey(b)
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := be.Seal(b.Context(), id, nonce, msg, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := be.Seal(b.Context(), id, nonce, msg, aad); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkOpen1KiB(b *testing.B) {
	be, id, nonce, msg, aad, ct := benchKey(b)
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := be.Open(b.Context(), id, nonce, ct, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := be.Open(b.Context(), id, nonce, ct, aad); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
