package pkcs11

import (
	"crypto/rand"
	"testing"

	"github.com/sigil-kms/sigil/hsm"
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

// benchSign measures Sign with a key pair of type typ and mechanism m.
func benchSign(b *testing.B, typ hsm.KeyType, m hsm.Mechanism) {
	be, _ := newBackend(b)
	id, pub := hsmtest.NewKeyPair(b, be, typ)
	input := hsmtest.SignInput(typ, m, []byte("sigil:bench"))
	sig, err := be.Sign(b.Context(), id, input, m)
	if err != nil {
		b.Fatal(err)
	}
	if err := hsmtest.Verify(pub, m, input, sig); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := be.Sign(b.Context(), id, input, m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := be.Sign(b.Context(), id, input, m); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkSignES256(b *testing.B) { benchSign(b, hsm.ECP256, hsm.ECDSA) }

func BenchmarkSignPS256(b *testing.B) { benchSign(b, hsm.RSA2048, hsm.RSAPSSSHA256) }

func BenchmarkSignEdDSA(b *testing.B) { benchSign(b, hsm.Ed25519, hsm.EdDSA) }

func BenchmarkRandom32(b *testing.B) {
	be, _ := newBackend(b)
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(32)
		for b.Loop() {
			if _, err := be.Random(b.Context(), 32); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := be.Random(b.Context(), 32); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
