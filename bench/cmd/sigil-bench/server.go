package main

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sigil-kms/sigil/client"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

// serverAlgorithm returns the key algorithm an operation needs.
func serverAlgorithm(rpc string) sigilv1.Algorithm {
	switch rpc {
	case "SignES256", "SignJWTES256":
		return sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256
	case "SignPS256":
		return sigilv1.Algorithm_ALGORITHM_RSA_PSS_2048_SHA256
	}
	return sigilv1.Algorithm_ALGORITHM_AES_256_GCM
}

// httpClient returns an HTTP/2-only client: h2c with prior knowledge for
// http:// URLs, HTTP/2 over TLS for https:// ones.
func httpClient(addr string, conc int) *http.Client {
	var p http.Protocols
	if strings.HasPrefix(addr, "http://") {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP2(true)
	}
	return &http.Client{Transport: &http.Transport{
		Protocols:           &p,
		MaxIdleConnsPerHost: conc,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}}
}

// bearerAuth sets the Authorization header of every request.
func bearerAuth(token string) connect.UnaryInterceptorFunc {
	v := "Bearer " + token
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", v)
			return next(ctx, req)
		}
	}
}

// newServerBench creates a key for cfg.rpc on the server and returns the
// operation that calls the RPC with it.
func newServerBench(ctx context.Context, cfg config) (bench, error) {
	token, err := readSecret(cfg.tokenFile, "token")
	if err != nil {
		return bench{}, err
	}
	hc := httpClient(cfg.addr, cfg.concurrency)
	c := client.New(cfg.addr, hc, connect.WithInterceptors(bearerAuth(token)))
	name := "bench-" + strings.ToLower(cfg.rpc) + "-" + randomHex(4)
	if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: name, Algorithm: serverAlgorithm(cfg.rpc)}); err != nil {
		return bench{}, fmt.Errorf("create key %s: %w", name, err)
	}
	s := &serverBench{c: c, name: name, pss: cfg.rpc == "SignPS256"}
	b := bench{cleanup: hc.CloseIdleConnections, verify: func(context.Context) error { return nil }}
	switch cfg.rpc {
	case "Encrypt1K":
		s.plaintext = randomBytes(plaintextSize)
		b.op, b.verify = s.encrypt, s.verifyCiphertexts
	case "Decrypt1K":
		s.plaintext = randomBytes(plaintextSize)
		s.ciphertext, err = c.Encrypt(ctx, name, s.plaintext, aad)
		b.op = s.decrypt
	case "GenerateDataKey":
		b.op, b.verify = s.generateDataKey, s.verifyDataKeys
	case "SignES256", "SignPS256":
		s.pub, err = s.publicKey(ctx)
		b.op, b.verify = s.sign, s.verifySignatures
	case "SignJWTES256":
		s.pub, err = s.publicKey(ctx)
		if err == nil {
			err = s.refreshClaims(time.Now())
		}
		b.op, b.verify = s.signJWT, s.verifyTokens
	}
	if err != nil {
		return bench{}, err
	}
	return b, nil
}

// sealed is a kept ciphertext and the plaintext it must decrypt to.
type sealed struct{ plaintext, ciphertext []byte }

// timedClaims are JWT claims and when they were made.
type timedClaims struct {
	made   time.Time
	claims *structpb.Struct
}

// claimsMaxAge is how long the same claims are signed before fresh ones
// (with a later iat and exp) are made.
const claimsMaxAge = time.Minute

// serverBench holds what the server operations share.
type serverBench struct {
	c          *client.Client
	name       string
	plaintext  []byte
	ciphertext []byte
	pub        crypto.PublicKey
	pss        bool // RSA-PSS signatures, else ECDSA in DER
	claims     atomic.Pointer[timedClaims]

	sealed     sampler[sealed]
	signatures sampler[[]byte]
	tokens     sampler[string]
}

// publicKey returns the public key of the primary version.
func (s *serverBench) publicKey(ctx context.Context) (crypto.PublicKey, error) {
	res, err := s.c.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Name: s.name})
	if err != nil {
		return nil, fmt.Errorf("get public key: %w", err)
	}
	return parsePEMPublicKey(res.GetPem())
}

func (s *serverBench) encrypt(ctx context.Context, _, seq int) error {
	ct, err := s.c.Encrypt(ctx, s.name, s.plaintext, aad)
	if err != nil {
		return err
	}
	if len(ct) < plaintextSize+16 {
		return checkFailed("ciphertext of %d bytes", len(ct))
	}
	if s.sealed.want(seq) {
		s.sealed.add(sealed{s.plaintext, ct})
	}
	return nil
}

func (s *serverBench) decrypt(ctx context.Context, _, _ int) error {
	pt, err := s.c.Decrypt(ctx, s.name, s.ciphertext, aad)
	if err != nil {
		return err
	}
	if !bytes.Equal(pt, s.plaintext) {
		return checkFailed("decrypted plaintext differs")
	}
	return nil
}

func (s *serverBench) generateDataKey(ctx context.Context, _, seq int) error {
	res, err := s.c.GenerateDataKey(ctx, &sigilv1.GenerateDataKeyRequest{Name: s.name, AssociatedData: aad})
	if err != nil {
		return err
	}
	if len(res.GetPlaintext()) != dataKeySize || len(res.GetCiphertext()) < dataKeySize+16 {
		return checkFailed("data key of %d bytes, wrapped in %d", len(res.GetPlaintext()), len(res.GetCiphertext()))
	}
	if s.sealed.want(seq) {
		s.sealed.add(sealed{res.GetPlaintext(), res.GetCiphertext()})
	}
	return nil
}

func (s *serverBench) sign(ctx context.Context, _, seq int) error {
	res, err := s.c.Sign(ctx, &sigilv1.SignRequest{Name: s.name, Input: &sigilv1.SignRequest_Digest{Digest: digest}})
	if err != nil {
		return err
	}
	sig := res.GetSignature()
	if n := len(sig); s.pss && n != rsa2048Size || !s.pss && (n < 8 || n > maxDERP256) {
		return checkFailed("%v signature of %d bytes", res.GetAlgorithm(), n)
	}
	if s.signatures.want(seq) {
		s.signatures.add(sig)
	}
	return nil
}

// refreshClaims makes fresh claims at now.
func (s *serverBench) refreshClaims(now time.Time) error {
	c, err := structpb.NewStruct(jwtClaims(now))
	if err != nil {
		return err
	}
	s.claims.Store(&timedClaims{now, c})
	return nil
}

func (s *serverBench) signJWT(ctx context.Context, _, seq int) error {
	tc := s.claims.Load()
	if now := time.Now(); now.Sub(tc.made) > claimsMaxAge {
		if err := s.refreshClaims(now); err != nil {
			return err
		}
		tc = s.claims.Load()
	}
	res, err := s.c.SignJWT(ctx, &sigilv1.SignJWTRequest{Name: s.name, Claims: tc.claims})
	if err != nil {
		return err
	}
	if _, _, err := splitJWT(res.GetToken()); err != nil {
		return err
	}
	if s.tokens.want(seq) {
		s.tokens.add(res.GetToken())
	}
	return nil
}

// verifyCiphertexts decrypts the kept ciphertexts.
func (s *serverBench) verifyCiphertexts(ctx context.Context) error {
	for _, x := range s.sealed.all() {
		pt, err := s.c.Decrypt(ctx, s.name, x.ciphertext, aad)
		if err != nil {
			return fmt.Errorf("decrypt a kept ciphertext: %w", err)
		}
		if !bytes.Equal(pt, x.plaintext) {
			return checkFailed("a kept ciphertext decrypts to another plaintext")
		}
	}
	return nil
}

// verifyDataKeys unwraps the kept data keys.
func (s *serverBench) verifyDataKeys(ctx context.Context) error { return s.verifyCiphertexts(ctx) }

// verifySignatures verifies the kept signatures (DER for ECDSA).
func (s *serverBench) verifySignatures(context.Context) error {
	for _, sig := range s.signatures.all() {
		if err := verifySignature(s.pub, digest, sig, true); err != nil {
			return err
		}
	}
	return nil
}

// verifyTokens verifies the kept tokens.
func (s *serverBench) verifyTokens(context.Context) error {
	for _, t := range s.tokens.all() {
		if err := verifyJWT(s.pub, t); err != nil {
			return err
		}
	}
	return nil
}
