package hsmtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"math/big"
	"testing"

	"github.com/sigil-kms/sigil/hsm"
)

// KeyPairTypes lists every asymmetric key type.
var KeyPairTypes = []hsm.KeyType{hsm.ECP256, hsm.ECP384, hsm.RSA2048, hsm.RSA3072, hsm.RSA4096, hsm.Ed25519}

// Mechanisms lists every signature mechanism.
var Mechanisms = []hsm.Mechanism{hsm.ECDSA, hsm.RSAPSSSHA256, hsm.RSAPKCS1SHA256, hsm.EdDSA}

// CanSign reports whether a key of type t signs with mechanism m.
func CanSign(t hsm.KeyType, m hsm.Mechanism) bool {
	switch t {
	case hsm.ECP256, hsm.ECP384:
		return m == hsm.ECDSA
	case hsm.RSA2048, hsm.RSA3072, hsm.RSA4096:
		return m == hsm.RSAPSSSHA256 || m == hsm.RSAPKCS1SHA256
	case hsm.Ed25519:
		return m == hsm.EdDSA
	}
	return false
}

// SignInput returns what Sign takes for msg under mechanism m with a key of
// type t: the message itself for EdDSA, its SHA-384 digest for ECDSA on
// P-384 and its SHA-256 digest otherwise.
func SignInput(t hsm.KeyType, m hsm.Mechanism, msg []byte) []byte {
	switch {
	case m == hsm.EdDSA:
		return msg
	case t == hsm.ECP384:
		d := sha512.Sum384(msg)
		return d[:]
	default:
		d := sha256.Sum256(msg)
		return d[:]
	}
}

// NewKeyPair generates a key pair of type typ on b and returns its
// identifier and public key.
func NewKeyPair(t testing.TB, b hsm.Backend, typ hsm.KeyType) ([]byte, crypto.PublicKey) {
	t.Helper()
	id := NewID(t)
	spec := hsm.KeySpec{ID: id, Label: fmt.Sprintf("sigil:test:%x", id[:4]), Type: typ}
	pub, err := b.GenerateKey(context.Background(), spec)
	if err != nil {
		t.Fatalf("GenerateKey(%v): %v", typ, err)
	}
	if err := CheckPublicKey(typ, pub); err != nil {
		t.Fatalf("GenerateKey(%v): %v", typ, err)
	}
	return id, pub
}

// CheckPublicKey checks that pub is a public key of type typ, of the Go
// type and size GenerateKey promises.
func CheckPublicKey(typ hsm.KeyType, pub crypto.PublicKey) error {
	curves := map[hsm.KeyType]elliptic.Curve{hsm.ECP256: elliptic.P256(), hsm.ECP384: elliptic.P384()}
	bits := map[hsm.KeyType]int{hsm.RSA2048: 2048, hsm.RSA3072: 3072, hsm.RSA4096: 4096}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if c := curves[typ]; c == nil || k.Curve != c {
			return fmt.Errorf("%v public key is ECDSA on %s", typ, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := bits[typ]; n == 0 || k.N.BitLen() != n || k.E != 65537 {
			return fmt.Errorf("%v public key is RSA-%d with exponent %d", typ, k.N.BitLen(), k.E)
		}
	case ed25519.PublicKey:
		if typ != hsm.Ed25519 || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%v public key is a %d-byte Ed25519 key", typ, len(k))
		}
	default:
		return fmt.Errorf("%v public key is a %T", typ, pub)
	}
	return nil
}

// Verify checks, with the standard library, that sig is a signature of
// input by pub's private key under mechanism m, in the format Sign
// promises.
func Verify(pub crypto.PublicKey, m hsm.Mechanism, input, sig []byte) error {
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		if m != hsm.ECDSA || len(sig) != 2*size {
			return fmt.Errorf("%d-byte mechanism %d signature for an ECDSA key, want a %d-byte ECDSA one", len(sig), int(m), 2*size)
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		ok = ecdsa.Verify(k, input, r, s)
	case *rsa.PublicKey:
		var err error
		switch m {
		case hsm.RSAPSSSHA256:
			err = rsa.VerifyPSS(k, crypto.SHA256, input, sig, &rsa.PSSOptions{SaltLength: sha256.Size})
		case hsm.RSAPKCS1SHA256:
			err = rsa.VerifyPKCS1v15(k, crypto.SHA256, input, sig)
		default:
			err = fmt.Errorf("mechanism %d for an RSA key", int(m))
		}
		if err != nil {
			return fmt.Errorf("signature does not verify: %w", err)
		}
		ok = true
	case ed25519.PublicKey:
		ok = m == hsm.EdDSA && ed25519.Verify(k, input, sig)
	default:
		return fmt.Errorf("public key of type %T", pub)
	}
	if !ok {
		return errors.New("signature does not verify")
	}
	return nil
}
