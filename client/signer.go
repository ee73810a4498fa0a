package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"time"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

// Signer is a crypto.Signer whose private key is one version of a Sigil
// signing key. It can sign X.509 certificates, JWS with jwx or golang-jwt,
// and anything else that takes a crypto.Signer. Each Sign is one Sign RPC.
type Signer struct {
	c       *Client
	name    string
	version uint32
	alg     sigilv1.Algorithm
	pub     crypto.PublicKey
	// Timeout bounds each Sign call, which crypto.Signer gives no context.
	Timeout time.Duration
}

// hashes is the digest each signing algorithm expects, 0 for Ed25519.
var hashes = map[sigilv1.Algorithm]crypto.Hash{
	sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256:        crypto.SHA256,
	sigilv1.Algorithm_ALGORITHM_EC_P384_SHA384:        crypto.SHA384,
	sigilv1.Algorithm_ALGORITHM_RSA_PSS_2048_SHA256:   crypto.SHA256,
	sigilv1.Algorithm_ALGORITHM_RSA_PSS_3072_SHA256:   crypto.SHA256,
	sigilv1.Algorithm_ALGORITHM_RSA_PSS_4096_SHA256:   crypto.SHA256,
	sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_2048_SHA256: crypto.SHA256,
	sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_3072_SHA256: crypto.SHA256,
	sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_4096_SHA256: crypto.SHA256,
	sigilv1.Algorithm_ALGORITHM_ED25519:               0,
}

// Signer returns a Signer for the named key. It pins the key's current
// primary version, so that signatures always match Public even after a
// rotation; call Signer again to move to a newer version.
func (c *Client) Signer(ctx context.Context, name string) (*Signer, error) {
	res, err := c.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Name: name})
	if err != nil {
		return nil, err
	}
	if _, ok := hashes[res.GetAlgorithm()]; !ok {
		return nil, fmt.Errorf("client: %s is not a signing algorithm", res.GetAlgorithm())
	}
	block, _ := pem.Decode([]byte(res.GetPem()))
	if block == nil {
		return nil, errors.New("client: server sent no PEM public key")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("client: public key: %w", err)
	}
	return &Signer{c: c, name: name, version: res.GetKeyVersion(), alg: res.GetAlgorithm(), pub: pub, Timeout: 30 * time.Second}, nil
}

// Public returns the public key of the pinned version.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Version returns the pinned key version.
func (s *Signer) Version() uint32 { return s.version }

// Sign signs digest (for Ed25519, the whole message with opts.HashFunc()
// 0) as crypto.Signer describes: ECDSA signatures are ASN.1 DER. rand is
// ignored; the HSM makes its own randomness. The options must match the
// key: the right hash, and PSS options for a PSS key only.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	return s.SignContext(ctx, digest, opts)
}

// SignContext is Sign with a context.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := s.checkOpts(opts); err != nil {
		return nil, err
	}
	req := &sigilv1.SignRequest{Name: s.name, Version: s.version, Encoding: sigilv1.SignatureEncoding_SIGNATURE_ENCODING_DER}
	if hashes[s.alg] == 0 {
		req.Input = &sigilv1.SignRequest_Message{Message: digest}
	} else {
		req.Input = &sigilv1.SignRequest_Digest{Digest: digest}
	}
	res, err := s.c.KeyManagementServiceClient.Sign(ctx, req)
	if err != nil {
		return nil, err
	}
	return res.GetSignature(), nil
}

// checkOpts refuses signer options the key cannot honour, rather than
// returning a signature the caller's verifier would reject.
func (s *Signer) checkOpts(opts crypto.SignerOpts) error {
	want := hashes[s.alg]
	var got crypto.Hash
	if opts != nil {
		got = opts.HashFunc()
	}
	if got != want {
		return fmt.Errorf("client: %s signs with hash %v, not %v", s.alg, want, got)
	}
	pss, isPSS := opts.(*rsa.PSSOptions)
	switch s.pub.(type) {
	case *rsa.PublicKey:
		wantPSS := s.alg == sigilv1.Algorithm_ALGORITHM_RSA_PSS_2048_SHA256 ||
			s.alg == sigilv1.Algorithm_ALGORITHM_RSA_PSS_3072_SHA256 ||
			s.alg == sigilv1.Algorithm_ALGORITHM_RSA_PSS_4096_SHA256
		if isPSS != wantPSS {
			return fmt.Errorf("client: %s needs PSS options: %v", s.alg, wantPSS)
		}
		if isPSS && pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != rsa.PSSSaltLengthAuto && pss.SaltLength != want.Size() {
			return fmt.Errorf("client: %s uses a %d-byte salt", s.alg, want.Size())
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
		if isPSS {
			return fmt.Errorf("client: %s takes no PSS options", s.alg)
		}
	}
	return nil
}

var _ crypto.Signer = (*Signer)(nil)
