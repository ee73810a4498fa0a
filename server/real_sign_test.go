package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"

	"connectrpc.com/connect"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

// signingAlgorithms lists every signing algorithm with its hash (0 for
// Ed25519, which signs messages).
var signingAlgorithms = []struct {
	alg  sigilv1.Algorithm
	hash crypto.Hash
	jwa  string
}{
	{sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256, crypto.SHA256, "ES256"},
	{sigilv1.Algorithm_ALGORITHM_EC_P384_SHA384, crypto.SHA384, "ES384"},
	{sigilv1.Algorithm_ALGORITHM_RSA_PSS_2048_SHA256, crypto.SHA256, "PS256"},
	{sigilv1.Algorithm_ALGORITHM_RSA_PSS_3072_SHA256, crypto.SHA256, "PS256"},
	{sigilv1.Algorithm_ALGORITHM_RSA_PSS_4096_SHA256, crypto.SHA256, "PS256"},
	{sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_2048_SHA256, crypto.SHA256, "RS256"},
	{sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_3072_SHA256, crypto.SHA256, "RS256"},
	{sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_4096_SHA256, crypto.SHA256, "RS256"},
	{sigilv1.Algorithm_ALGORITHM_ED25519, 0, "EdDSA"},
}

// stdVerify verifies sig over msg with Go's standard library, the way an
// independent verifier holding only the PEM would.
func stdVerify(t *testing.T, pub crypto.PublicKey, alg sigilv1.Algorithm, h crypto.Hash, msg, sig []byte, raw bool) bool {
	t.Helper()
	var digest []byte
	if h != 0 {
		hh := h.New()
		hh.Write(msg)
		digest = hh.Sum(nil)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !raw {
			return ecdsa.VerifyASN1(k, digest, sig)
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return false
		}
		return ecdsa.Verify(k, digest, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:]))
	case *rsa.PublicKey:
		if strings.Contains(alg.String(), "PSS") {
			return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
		return rsa.VerifyPKCS1v15(k, h, digest, sig) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	}
	t.Fatalf("unexpected public key type %T", pub)
	return false
}

func parsePEM(t *testing.T, s string) crypto.PublicKey {
	t.Helper()
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("not a PUBLIC KEY PEM: %q", s)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestRealSignEveryAlgorithm(t *testing.T) {
	ctx := context.Background()
	r := startReal(t)
	msg := []byte("the quick brown fox")
	for _, tc := range signingAlgorithms {
		t.Run(tc.alg.String(), func(t *testing.T) {
			name := strings.ToLower(strings.TrimPrefix(tc.alg.String(), "ALGORITHM_"))
			name = strings.ReplaceAll(name, "_", "-")
			created, err := r.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: name, Algorithm: tc.alg})
			if err != nil {
				t.Fatal(err)
			}
			if created.GetKey().GetPurpose() != sigilv1.Purpose_PURPOSE_SIGN_VERIFY {
				t.Fatalf("purpose = %v", created.GetKey().GetPurpose())
			}
			pk, err := r.client.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			pub := parsePEM(t, pk.GetPem())
			var jwk map[string]any
			if err := json.Unmarshal([]byte(pk.GetJwk()), &jwk); err != nil || jwk["alg"] != tc.jwa || jwk["use"] != "sig" || jwk["kid"] == "" {
				t.Fatalf("jwk = %s (%v)", pk.GetJwk(), err)
			}

			encodings := []sigilv1.SignatureEncoding{sigilv1.SignatureEncoding_SIGNATURE_ENCODING_UNSPECIFIED}
			if tc.jwa == "ES256" || tc.jwa == "ES384" {
				encodings = append(encodings, sigilv1.SignatureEncoding_SIGNATURE_ENCODING_RAW)
			}
			for _, enc := range encodings {
				raw := enc == sigilv1.SignatureEncoding_SIGNATURE_ENCODING_RAW
				inputs := []*sigilv1.SignRequest{{Name: name, Encoding: enc, Input: &sigilv1.SignRequest_Message{Message: msg}}}
				if tc.hash != 0 {
					h := tc.hash.New()
					h.Write(msg)
					inputs = append(inputs, &sigilv1.SignRequest{Name: name, Encoding: enc, Input: &sigilv1.SignRequest_Digest{Digest: h.Sum(nil)}})
				}
				for _, req := range inputs {
					res, err := r.client.Sign(ctx, req)
					if err != nil {
						t.Fatalf("Sign(%T, %v): %v", req.GetInput(), enc, err)
					}
					if res.GetAlgorithm() != tc.alg || res.GetKeyVersion() != 1 {
						t.Fatalf("Sign = %v v%d", res.GetAlgorithm(), res.GetKeyVersion())
					}
					sig := res.GetSignature()
					if !stdVerify(t, pub, tc.alg, tc.hash, msg, sig, raw) {
						t.Fatalf("standard library rejects the %T signature (%v)", req.GetInput(), enc)
					}
					vreq := &sigilv1.VerifyRequest{Name: name, Version: 1, Signature: sig, Encoding: enc}
					switch in := req.GetInput().(type) {
					case *sigilv1.SignRequest_Digest:
						vreq.Input = &sigilv1.VerifyRequest_Digest{Digest: in.Digest}
					case *sigilv1.SignRequest_Message:
						vreq.Input = &sigilv1.VerifyRequest_Message{Message: in.Message}
					}
					if v, err := r.client.Verify(ctx, vreq); err != nil || !v.GetValid() {
						t.Fatalf("Verify RPC = %v, %v", v, err)
					}
					for _, bit := range []int{0, len(sig)*8/2 + 3, len(sig)*8 - 1} {
						flipped := append([]byte(nil), sig...)
						flipped[bit/8] ^= 1 << (bit % 8)
						vreq.Signature = flipped
						if v, err := r.client.Verify(ctx, vreq); err != nil || v.GetValid() {
							t.Fatalf("Verify RPC accepts a signature with bit %d flipped: %v, %v", bit, v, err)
						}
						if stdVerify(t, pub, tc.alg, tc.hash, msg, flipped, raw) {
							t.Fatalf("standard library accepts bit %d flipped", bit)
						}
					}
				}
			}
		})
	}
	checkSigningObjects(t, r, len(signingAlgorithms))
}

// checkSigningObjects reads the token's objects back through PKCS#11: n
// private keys, each SIGN-only, sensitive and never extractable, and no
// public key objects.
func checkSigningObjects(t *testing.T, r real, n int) {
	t.Helper()
	objs := r.token.Objects(t)
	if len(objs) != n {
		t.Fatalf("token holds %d objects, want %d", len(objs), n)
	}
	for _, o := range objs {
		if !o.Sign || o.Decrypt || o.Encrypt || o.Unwrap || o.Wrap || o.Derive || o.Verify {
			t.Errorf("object %q is not SIGN-only: %+v", o.Label, o)
		}
		if !o.Token || !o.Private || !o.Sensitive || !o.AlwaysSensitive || o.Extractable || !o.NeverExtractable || !o.Local {
			t.Errorf("object %q has weak attributes: %+v", o.Label, o)
		}
	}
}

func TestRealSignRejects(t *testing.T) {
	ctx := context.Background()
	r := startReal(t)
	createAES(t, r.client, "aes")
	for _, k := range []struct {
		name string
		alg  sigilv1.Algorithm
	}{{"es256", sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256}, {"ed", sigilv1.Algorithm_ALGORITHM_ED25519}, {"rs", sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_2048_SHA256}} {
		if _, err := r.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: k.name, Algorithm: k.alg}); err != nil {
			t.Fatal(err)
		}
	}
	digest := func(n int) *sigilv1.SignRequest_Digest { return &sigilv1.SignRequest_Digest{Digest: make([]byte, n)} }
	tests := []struct {
		name string
		req  *sigilv1.SignRequest
		code connect.Code
	}{
		{"sign with an AES key", &sigilv1.SignRequest{Name: "aes", Input: digest(32)}, connect.CodeFailedPrecondition},
		{"digest too short", &sigilv1.SignRequest{Name: "es256", Input: digest(31)}, connect.CodeInvalidArgument},
		{"SHA-512 digest for P-256", &sigilv1.SignRequest{Name: "es256", Input: digest(64)}, connect.CodeInvalidArgument},
		{"empty digest", &sigilv1.SignRequest{Name: "es256", Input: digest(0)}, connect.CodeInvalidArgument},
		{"no input", &sigilv1.SignRequest{Name: "es256"}, connect.CodeInvalidArgument},
		{"digest for Ed25519", &sigilv1.SignRequest{Name: "ed", Input: digest(32)}, connect.CodeInvalidArgument},
		{"raw encoding for RSA", &sigilv1.SignRequest{Name: "rs", Input: digest(32), Encoding: sigilv1.SignatureEncoding_SIGNATURE_ENCODING_RAW}, connect.CodeInvalidArgument},
		{"unknown encoding", &sigilv1.SignRequest{Name: "es256", Input: digest(32), Encoding: 7}, connect.CodeInvalidArgument},
		{"unknown version", &sigilv1.SignRequest{Name: "es256", Version: 9, Input: digest(32)}, connect.CodeNotFound},
		{"message over 64 KiB", &sigilv1.SignRequest{Name: "es256", Input: &sigilv1.SignRequest_Message{Message: make([]byte, 64<<10+1)}}, connect.CodeResourceExhausted},
		{"unknown key", &sigilv1.SignRequest{Name: "nope", Input: digest(32)}, connect.CodeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := r.hsm.Calls("Sign")
			_, err := r.client.Sign(ctx, tc.req)
			wantCode(t, err, tc.code)
			if n := r.hsm.Calls("Sign") - before; n != 0 {
				t.Fatalf("refused Sign made %d HSM calls", n)
			}
		})
	}
	_, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "es256", Plaintext: []byte("x")})
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = r.client.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Name: "aes"})
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = r.client.SignJWT(ctx, &sigilv1.SignJWTRequest{Name: "aes"})
	wantCode(t, err, connect.CodeInvalidArgument) // no claims: checked first
	if _, err := r.client.Sign(ctx, &sigilv1.SignRequest{Name: "es256", Input: digest(32)}); err != nil {
		t.Fatalf("a good request after the refusals: %v", err)
	}
	if n := r.hsm.Calls("Sign"); n != 1 {
		t.Fatalf("HSM Sign calls = %d, want 1", n)
	}
}
