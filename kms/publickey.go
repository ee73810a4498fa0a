package kms

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/sigil-kms/sigil/keystore"
)

// publicKey is the parsed public key of a signing version and its JWK.
// Versions never change their key, so these are cached for good.
type publicKey struct {
	key crypto.PublicKey
	der []byte
	// jwk is the public JWK with kid, alg and use, as JSON.
	jwk json.RawMessage
	// kid is the RFC 7638 SHA-256 thumbprint of the JWK, base64url.
	kid string
}

// versionRef names one version of one key.
type versionRef struct {
	key     [16]byte
	version uint32
}

// publicKeyOf returns the parsed public key of a version, from the cache or
// from its stored DER. It makes no HSM call.
func (s *Service) publicKeyOf(keyID [16]byte, version uint32, alg keystore.Algorithm, der []byte) (*publicKey, error) {
	ref := versionRef{keyID, version}
	if pk, ok := s.pubs.Load(ref); ok {
		return pk.(*publicKey), nil
	}
	if len(der) == 0 {
		return nil, fmt.Errorf("kms: version %d has no public key", version)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("kms: stored public key of version %d: %w", version, err)
	}
	jwkJSON, kid, err := publicJWK(pub, algorithms[alg].jwa)
	if err != nil {
		return nil, err
	}
	pk := &publicKey{key: pub, der: der, jwk: jwkJSON, kid: kid}
	s.pubs.Store(ref, pk)
	return pk, nil
}

// publicJWK returns the public JWK of pub with kid (its RFC 7638
// thumbprint), alg and use=sig.
func publicJWK(pub crypto.PublicKey, alg string) (json.RawMessage, string, error) {
	k, err := jwk.Import(pub)
	if err != nil {
		return nil, "", fmt.Errorf("kms: jwk: %w", err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, "", fmt.Errorf("kms: jwk thumbprint: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	sigAlg, ok := jwa.LookupSignatureAlgorithm(alg)
	if !ok {
		return nil, "", fmt.Errorf("kms: unknown JWA %q", alg)
	}
	if err := errors.Join(
		k.Set(jwk.KeyIDKey, kid),
		k.Set(jwk.AlgorithmKey, sigAlg),
		k.Set(jwk.KeyUsageKey, jwk.ForSignature),
	); err != nil {
		return nil, "", fmt.Errorf("kms: jwk: %w", err)
	}
	b, err := json.Marshal(k)
	if err != nil {
		return nil, "", fmt.Errorf("kms: jwk: %w", err)
	}
	return b, kid, nil
}

// signingVersion returns the named signing key, its version (0 means the
// primary) and the version's public key.
func (s *Service) signingVersion(ctx context.Context, name string, version uint32) (keystore.Key, keystore.Version, *publicKey, error) {
	k, err := s.signingKey(ctx, name)
	if err != nil {
		return keystore.Key{}, keystore.Version{}, nil, err
	}
	if version == 0 {
		version = s.Primary(k)
	}
	if version == 0 {
		return keystore.Key{}, keystore.Version{}, nil, newError(ErrFailedPrecondition, "key has no enabled version")
	}
	v, err := s.store.GetVersion(ctx, k.ID, version)
	if errors.Is(err, keystore.ErrNotFound) {
		return keystore.Key{}, keystore.Version{}, nil, newError(ErrNotFound, "key version not found")
	}
	if err != nil {
		return keystore.Key{}, keystore.Version{}, nil, internal("get version", err)
	}
	if v.State != keystore.StateEnabled {
		return keystore.Key{}, keystore.Version{}, nil, newError(ErrFailedPrecondition, "key version is not enabled")
	}
	pk, err := s.publicKeyOf(k.ID, v.Version, k.Algorithm, v.PublicKey)
	if err != nil {
		return keystore.Key{}, keystore.Version{}, nil, internal("public key", err)
	}
	return k, v, pk, nil
}

// signingKey returns the named key if it is a signing key.
func (s *Service) signingKey(ctx context.Context, name string) (keystore.Key, error) {
	k, err := s.GetKey(ctx, name)
	if err != nil {
		return keystore.Key{}, err
	}
	if k.Purpose != keystore.PurposeSignVerify {
		return keystore.Key{}, newError(ErrFailedPrecondition, "key is not a signing key")
	}
	return k, nil
}

// PublicKeyInfo is a signing version's public key in the forms callers use.
type PublicKeyInfo struct {
	// PEM is the "PUBLIC KEY" PEM block of the SubjectPublicKeyInfo.
	PEM string
	// JWK is the public JWK (with kid, alg and use) as JSON.
	JWK       json.RawMessage
	KID       string
	Algorithm keystore.Algorithm
	Version   uint32
}

// GetPublicKey returns the public key of a version of a signing key (0
// means the primary). It reads only the database, never the HSM.
func (s *Service) GetPublicKey(ctx context.Context, name string, version uint32) (PublicKeyInfo, error) {
	k, v, pk, err := s.signingVersion(ctx, name, version)
	if err != nil {
		return PublicKeyInfo{}, err
	}
	return PublicKeyInfo{
		PEM:       string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk.der})),
		JWK:       pk.jwk,
		KID:       pk.kid,
		Algorithm: k.Algorithm,
		Version:   v.Version,
	}, nil
}

// JWKS is a JSON Web Key Set document and its entity tag.
type JWKS struct {
	// JSON is the document: {"keys":[...]}.
	JSON []byte
	// ETag is a strong entity tag that changes exactly when the set of
	// keys changes.
	ETag string
}

// JWKS returns the public keys of every enabled version of the named
// signing key, or of every signing key if name is "". It reads only the
// database, never the HSM.
func (s *Service) JWKS(ctx context.Context, name string) (JWKS, error) {
	if name != "" {
		if _, err := s.signingKey(ctx, name); err != nil {
			return JWKS{}, err
		}
	}
	pubs, err := s.store.ListPublicKeys(ctx, name)
	if err != nil {
		return JWKS{}, internal("list public keys", err)
	}
	doc := struct {
		Keys []json.RawMessage `json:"keys"`
	}{Keys: make([]json.RawMessage, 0, len(pubs))}
	for _, p := range pubs {
		pk, err := s.publicKeyOf(p.KeyID, p.Version, p.Algorithm, p.DER)
		if err != nil {
			return JWKS{}, internal("public key", err)
		}
		doc.Keys = append(doc.Keys, pk.jwk)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return JWKS{}, internal("jwks", err)
	}
	sum := sha256.Sum256(b)
	return JWKS{JSON: b, ETag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`}, nil
}
