package client_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

// TestSignerCreatesCertificates self-signs an X.509 certificate with a
// remote Signer for each kind of key and checks it with the standard
// library.
func TestSignerCreatesCertificates(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	for _, a := range jwtAlgorithms {
		t.Run(a.jwa, func(t *testing.T) {
			name := "ca-" + a.jwa
			s.createKey(t, name, a.alg)
			signer, err := s.c.Signer(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := &x509.Certificate{
				SerialNumber:          big.NewInt(1),
				Subject:               pkix.Name{CommonName: name},
				NotBefore:             time.Now().Add(-time.Minute),
				NotAfter:              time.Now().Add(time.Hour),
				IsCA:                  true,
				BasicConstraintsValid: true,
				KeyUsage:              x509.KeyUsageCertSign,
			}
			if a.jwa == "PS256" {
				tmpl.SignatureAlgorithm = x509.SHA256WithRSAPSS
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
			if err != nil {
				t.Fatalf("CreateCertificate: %v", err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := cert.CheckSignatureFrom(cert); err != nil {
				t.Fatalf("certificate signature: %v", err)
			}
		})
	}
}

// TestSignerWithJWX signs a JWS with jwx through the remote Signer.
func TestSignerWithJWX(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	s.createKey(t, "jws", sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256)
	signer, err := s.c.Signer(ctx, "jws")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := jws.Sign([]byte("payload"), jws.WithKey(jwa.ES256(), signer))
	if err != nil {
		t.Fatalf("jws.Sign: %v", err)
	}
	if _, err := jws.Verify(msg, jws.WithKey(jwa.ES256(), signer.Public())); err != nil {
		t.Fatalf("jws.Verify: %v", err)
	}
}

func TestSignerRefusesMismatchedOptions(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	s.createKey(t, "pss", sigilv1.Algorithm_ALGORITHM_RSA_PSS_2048_SHA256)
	s.createKey(t, "p384", sigilv1.Algorithm_ALGORITHM_EC_P384_SHA384)
	s.createKey(t, "aes", sigilv1.Algorithm_ALGORITHM_AES_256_GCM)
	pss, err := s.c.Signer(ctx, "pss")
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	before := s.hsm.Calls("Sign")
	if _, err := pss.Sign(nil, digest[:], crypto.SHA256); err == nil {
		t.Error("PSS key signed with PKCS#1 v1.5 options")
	}
	if _, err := pss.Sign(nil, digest[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 20}); err == nil {
		t.Error("PSS key signed with a 20-byte salt")
	}
	p384, err := s.c.Signer(ctx, "p384")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p384.Sign(nil, digest[:], crypto.SHA256); err == nil {
		t.Error("P-384 key signed a SHA-256 digest")
	}
	if n := s.hsm.Calls("Sign") - before; n != 0 {
		t.Errorf("refused options made %d HSM calls", n)
	}
	if _, err := s.c.Signer(ctx, "aes"); err == nil {
		t.Error("Signer for an AES key")
	}
	sig, err := pss.Sign(nil, digest[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPSS(pss.Public().(*rsa.PublicKey), crypto.SHA256, digest[:], sig, nil); err != nil {
		t.Fatalf("PSS signature: %v", err)
	}
}
