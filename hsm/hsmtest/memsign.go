package hsmtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"

	"github.com/sigil-kms/sigil/hsm"
)

// newSigner generates a key pair of the given asymmetric type.
func newSigner(t hsm.KeyType) (crypto.Signer, error) {
	switch t {
	case hsm.ECP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case hsm.ECP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case hsm.RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case hsm.RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case hsm.RSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	case hsm.Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("%w: key type %v", hsm.ErrInvalid, t)
}

// checkSignRequest validates the mechanism and input as a PKCS#11 backend
// does: RSA mechanisms take a SHA-256 digest and ECDSA a non-empty digest.
func checkSignRequest(m hsm.Mechanism, input []byte) error {
	switch m {
	case hsm.ECDSA:
		if len(input) == 0 {
			return fmt.Errorf("%w: empty ECDSA digest", hsm.ErrInvalid)
		}
	case hsm.RSAPSSSHA256, hsm.RSAPKCS1SHA256:
		if len(input) != sha256.Size {
			return fmt.Errorf("%w: SHA-256 digest is %d bytes, want %d", hsm.ErrInvalid, len(input), sha256.Size)
		}
	case hsm.EdDSA:
	default:
		return fmt.Errorf("%w: mechanism %d", hsm.ErrInvalid, int(m))
	}
	return nil
}

// Sign signs input with the private key id, producing the signature formats
// of a PKCS#11 token: raw fixed-width r||s for ECDSA, a 32-byte salt for
// PSS, and pure Ed25519 over the message.
func (m *Memory) Sign(ctx context.Context, id, input []byte, mech hsm.Mechanism) ([]byte, error) {
	if err := check(ctx, id); err != nil {
		return nil, err
	}
	if err := checkSignRequest(mech, input); err != nil {
		return nil, err
	}
	k, err := m.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	refuse := fmt.Errorf("%w: %v key %x cannot sign with mechanism %d", hsm.ErrInvalid, k.typ, id, int(mech))
	var sig []byte
	switch priv := k.signer.(type) {
	case *ecdsa.PrivateKey:
		if mech != hsm.ECDSA {
			return nil, refuse
		}
		r, s, err := ecdsa.Sign(rand.Reader, priv, input)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", hsm.ErrUnavailable, err)
		}
		size := (priv.Curve.Params().BitSize + 7) / 8
		sig = make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
	case *rsa.PrivateKey:
		switch mech {
		case hsm.RSAPSSSHA256:
			sig, err = rsa.SignPSS(rand.Reader, priv, crypto.SHA256, input, &rsa.PSSOptions{SaltLength: sha256.Size})
		case hsm.RSAPKCS1SHA256:
			sig, err = rsa.SignPKCS1v15(nil, priv, crypto.SHA256, input)
		default:
			return nil, refuse
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", hsm.ErrUnavailable, err)
		}
	case ed25519.PrivateKey:
		if mech != hsm.EdDSA {
			return nil, refuse
		}
		sig = ed25519.Sign(priv, input)
	default: // an AES key
		return nil, refuse
	}
	return sig, nil
}
