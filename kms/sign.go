package kms

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/asn1"
	"math/big"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/keystore"
)

// MaxMessage is the largest message Sign and Verify accept.
const MaxMessage = 64 << 10

// InputKind says what the data of a Sign or Verify request is.
type InputKind int

// Input kinds.
const (
	// InputNone means the caller gave neither a digest nor a message.
	InputNone InputKind = iota
	// InputDigest is a digest made with the algorithm's hash.
	InputDigest
	// InputMessage is a message the server hashes (or, for Ed25519, signs
	// whole).
	InputMessage
)

// Encoding is the encoding of an ECDSA signature.
type Encoding int

// Signature encodings. Algorithms other than ECDSA have one encoding and
// accept only EncodingDefault and EncodingDER.
const (
	EncodingDefault Encoding = iota // DER
	EncodingDER                     // ASN.1 SEQUENCE { r, s }
	EncodingRaw                     // fixed-width r || s (JOSE)
)

// SignRequest asks for a signature.
type SignRequest struct {
	Name string
	// Version to sign with; 0 means the primary.
	Version  uint32
	Kind     InputKind
	Data     []byte
	Encoding Encoding
}

// Signature is the result of Sign.
type Signature struct {
	Signature []byte
	Version   uint32
	Algorithm keystore.Algorithm
}

// Sign signs a digest or message with a signing key. A digest of the wrong
// length, a digest for an Ed25519 key or a bad encoding is refused before
// any HSM call.
func (s *Service) Sign(ctx context.Context, req SignRequest) (Signature, error) {
	if req.Kind == InputMessage && len(req.Data) > MaxMessage {
		return Signature{}, newError(ErrTooLarge, "message exceeds %d bytes", MaxMessage)
	}
	k, v, _, err := s.signingVersion(ctx, req.Name, req.Version)
	if err != nil {
		return Signature{}, err
	}
	alg := algorithms[k.Algorithm]
	input, err := alg.signInput(req.Kind, req.Data)
	if err != nil {
		return Signature{}, err
	}
	if err := alg.checkEncoding(req.Encoding); err != nil {
		return Signature{}, err
	}
	sig, err := s.hsm.Sign(ctx, v.HSMID, input, alg.mech)
	if err != nil {
		return Signature{}, internal("sign", err)
	}
	if alg.mech == hsm.ECDSA && req.Encoding != EncodingRaw {
		if sig, err = rawToDER(sig); err != nil {
			return Signature{}, internal("sign", err)
		}
	}
	return Signature{Signature: sig, Version: v.Version, Algorithm: k.Algorithm}, nil
}

// signInput returns what the HSM signs for the caller's data: the digest,
// the server-made digest of a message, or for Ed25519 the message itself.
func (a algorithm) signInput(kind InputKind, data []byte) ([]byte, error) {
	switch kind {
	case InputDigest:
		if a.hash == 0 {
			return nil, newError(ErrInvalidArgument, "Ed25519 keys sign messages, not digests")
		}
		if len(data) != a.hash.Size() {
			return nil, newError(ErrInvalidArgument, "digest must be %d bytes (%s)", a.hash.Size(), a.hash)
		}
		return data, nil
	case InputMessage:
		if a.hash == 0 {
			return data, nil
		}
		h := a.hash.New()
		h.Write(data)
		return h.Sum(nil), nil
	default:
		return nil, newError(ErrInvalidArgument, "one of digest or message is required")
	}
}

func (a algorithm) checkEncoding(e Encoding) error {
	switch {
	case e == EncodingDefault || e == EncodingDER:
		return nil
	case e == EncodingRaw && a.mech == hsm.ECDSA:
		return nil
	case e == EncodingRaw:
		return newError(ErrInvalidArgument, "raw encoding applies to ECDSA keys only")
	default:
		return newError(ErrInvalidArgument, "unknown signature encoding")
	}
}

// ecdsaSignature is the ASN.1 form of an ECDSA signature.
type ecdsaSignature struct{ R, S *big.Int }

// rawToDER converts a fixed-width r||s signature to ASN.1 DER.
func rawToDER(raw []byte) ([]byte, error) {
	half := len(raw) / 2
	return asn1.Marshal(ecdsaSignature{
		R: new(big.Int).SetBytes(raw[:half]),
		S: new(big.Int).SetBytes(raw[half:]),
	})
}

// VerifyRequest asks whether a signature is valid.
type VerifyRequest struct {
	Name string
	// Version whose public key to use; 0 means the primary.
	Version   uint32
	Kind      InputKind
	Data      []byte
	Signature []byte
	Encoding  Encoding
}

// Verify reports whether the signature is valid for the data under the
// version's public key, and which version it checked. It uses the stored
// public key, never the HSM. A malformed signature is simply not valid.
func (s *Service) Verify(ctx context.Context, req VerifyRequest) (bool, uint32, error) {
	if req.Kind == InputMessage && len(req.Data) > MaxMessage {
		return false, 0, newError(ErrTooLarge, "message exceeds %d bytes", MaxMessage)
	}
	k, v, pk, err := s.signingVersion(ctx, req.Name, req.Version)
	if err != nil {
		return false, 0, err
	}
	alg := algorithms[k.Algorithm]
	input, err := alg.signInput(req.Kind, req.Data)
	if err != nil {
		return false, 0, err
	}
	if err := alg.checkEncoding(req.Encoding); err != nil {
		return false, 0, err
	}
	return alg.verify(pk.key, input, req.Signature, req.Encoding), v.Version, nil
}

// verify checks sig over input (a digest, or for Ed25519 the message).
func (a algorithm) verify(pub any, input, sig []byte, enc Encoding) bool {
	switch a.mech {
	case hsm.ECDSA:
		key, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return false
		}
		if enc != EncodingRaw {
			return ecdsa.VerifyASN1(key, input, sig)
		}
		if len(sig) != 2*a.ecSize {
			return false
		}
		r := new(big.Int).SetBytes(sig[:a.ecSize])
		ss := new(big.Int).SetBytes(sig[a.ecSize:])
		return ecdsa.Verify(key, input, r, ss)
	case hsm.RSAPSSSHA256:
		key, ok := pub.(*rsa.PublicKey)
		return ok && rsa.VerifyPSS(key, a.hash, input, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	case hsm.RSAPKCS1SHA256:
		key, ok := pub.(*rsa.PublicKey)
		return ok && rsa.VerifyPKCS1v15(key, a.hash, input, sig) == nil
	case hsm.EdDSA:
		key, ok := pub.(ed25519.PublicKey)
		return ok && len(sig) == ed25519.SignatureSize && ed25519.Verify(key, input, sig)
	}
	return false
}
