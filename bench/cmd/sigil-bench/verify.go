package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// Sizes of what the operations handle.
const (
	plaintextSize = 1024 // Encrypt1K and Decrypt1K
	dataKeySize   = 32   // GenerateDataKey
	p256SigSize   = 64   // raw r||s of ECDSA P-256
	rsa2048Size   = 256  // an RSA-2048 signature
	maxDERP256    = 72   // the longest DER ECDSA P-256 signature
)

// sampleEvery is how often (in operations of one goroutine) a response is
// kept for checking after the timed part, and maxSamples how many are kept
// in all.
const (
	sampleEvery = 128
	maxSamples  = 64
)

// aad is the associated data of every encryption.
var aad = []byte("sigil-bench")

// digest is the SHA-256 digest that SignES256 and SignPS256 sign.
var digest = func() []byte { d := sha256.Sum256([]byte("sigil-bench digest")); return d[:] }()

// jwtLifetime is the lifetime of the tokens SignJWTES256 signs, within
// the policy's default maximum of an hour.
const jwtLifetime = 10 * time.Minute

// jwtClaims returns the claims SignJWTES256 signs at now.
func jwtClaims(now time.Time) map[string]any {
	return map[string]any{"sub": "sigil-bench", "aud": "sigil-bench", "iat": now.Unix(), "exp": now.Add(jwtLifetime).Unix()}
}

// sampler keeps up to maxSamples values offered by the goroutines, so that
// their costly checks run after the timed part.
type sampler[T any] struct {
	mu    sync.Mutex
	items []T
}

// want reports whether the response of a goroutine's operation seq should
// be offered.
func (s *sampler[T]) want(seq int) bool { return seq%sampleEvery == 0 }

// add keeps v if fewer than maxSamples values are kept.
func (s *sampler[T]) add(v T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.items) < maxSamples {
		s.items = append(s.items, v)
	}
}

// all returns the kept values.
func (s *sampler[T]) all() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.items
}

// randomBytes returns n bytes from crypto/rand.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (Go 1.24+)
	return b
}

// randomHex returns 2n random hex digits.
func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }

// parsePEMPublicKey parses a PEM "PUBLIC KEY" block.
func parsePEMPublicKey(s string) (crypto.PublicKey, error) {
	blk, _ := pem.Decode([]byte(s))
	if blk == nil {
		return nil, errors.New("public key is not PEM")
	}
	return x509.ParsePKIXPublicKey(blk.Bytes)
}

// verifySignature checks sig over the SHA-256 digest d with pub: an ECDSA
// signature in DER when der is set, else raw r||s; an RSA one as PSS.
func verifySignature(pub crypto.PublicKey, d, sig []byte, der bool) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if der {
			if !ecdsa.VerifyASN1(k, d, sig) {
				return checkFailed("ECDSA signature does not verify")
			}
			return nil
		}
		n := len(sig) / 2
		if len(sig) != p256SigSize {
			return checkFailed("ECDSA signature of %d bytes, want %d", len(sig), p256SigSize)
		}
		r, s := new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		if !ecdsa.Verify(k, d, r, s) {
			return checkFailed("ECDSA signature does not verify")
		}
		return nil
	case *rsa.PublicKey:
		if err := rsa.VerifyPSS(k, crypto.SHA256, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}); err != nil {
			return checkFailed("PSS signature does not verify: %v", err)
		}
		return nil
	}
	return fmt.Errorf("unexpected public key type %T", pub)
}

// verifyJWT checks the ES256 signature of a compact JWS with pub.
func verifyJWT(pub crypto.PublicKey, token string) error {
	input, sig, err := splitJWT(token)
	if err != nil {
		return err
	}
	d := sha256.Sum256([]byte(input))
	return verifySignature(pub, d[:], sig, false)
}

// splitJWT returns a compact JWS's signing input and decoded signature,
// checking that the signature is an ES256 one.
func splitJWT(token string) (string, []byte, error) {
	i := strings.LastIndexByte(token, '.')
	if i < 0 || strings.Count(token, ".") != 2 {
		return "", nil, checkFailed("token is not a compact JWS")
	}
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil || len(sig) != p256SigSize {
		return "", nil, checkFailed("token signature is not %d bytes of base64url", p256SigSize)
	}
	return token[:i], sig, nil
}
