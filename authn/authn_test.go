package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// ca is a throwaway certificate authority.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, name string) ca {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return ca{cert, key}
}

func (c ca) issue(t *testing.T, cn string, spiffe string, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	if spiffe != "" {
		u, _ := url.Parse(spiffe)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func request(cert *x509.Certificate, bearer string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	if cert != nil {
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	}
	if bearer != "" {
		r.Header.Set("Authorization", "Bearer "+bearer)
	}
	return r
}

// issuerKey is a JWT issuer's signing key and its JWKS file.
type issuerKey struct {
	priv jwk.Key
	file string
}

func newIssuerKey(t *testing.T) issuerKey {
	t.Helper()
	raw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	priv, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = priv.Set(jwk.KeyIDKey, "k1")
	_ = priv.Set(jwk.AlgorithmKey, jwa.ES256())
	pub, _ := priv.PublicKey()
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	b, _ := json.Marshal(set)
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return issuerKey{priv, file}
}

func (k issuerKey) sign(t *testing.T, iss, aud, sub string, exp time.Time) string {
	t.Helper()
	b := jwt.NewBuilder().Issuer(iss).Subject(sub).Expiration(exp).IssuedAt(time.Now())
	if aud != "" {
		b = b.Audience([]string{aud})
	}
	tok, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), k.priv))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	good, other := newCA(t, "sigil clients"), newCA(t, "someone else")
	pool := x509.NewCertPool()
	pool.AddCert(good.cert)
	ik := newIssuerKey(t)
	secret := "s3cr3t-token-value"
	sum := sha256.Sum256([]byte(secret))
	a, err := New(ctx, Config{
		ClientCAs: pool,
		Tokens:    map[string]string{"billing": hex.EncodeToString(sum[:])},
		Issuers:   []Issuer{{Issuer: "https://k8s.example", Audience: "sigil", JWKSFile: ik.file, Leeway: DefaultLeeway}},
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	pubJWK, _ := ik.priv.PublicKey()
	pubJSON, _ := json.Marshal(pubJWK)
	hs256 := b64(map[string]string{"alg": "HS256", "kid": "k1"}) + "." + b64(map[string]any{"iss": "https://k8s.example", "aud": "sigil", "sub": "x", "exp": now.Add(time.Hour).Unix()}) + "." + base64.RawURLEncoding.EncodeToString(pubJSON[:32])
	tests := []struct {
		name string
		req  *http.Request
		want string // "" means refused
	}{
		{"SPIFFE certificate", request(good.issue(t, "api", "spiffe://prod/ns/pay/sa/api", x509.ExtKeyUsageClientAuth), ""), "spiffe://prod/ns/pay/sa/api"},
		{"CN certificate", request(good.issue(t, "batch-job", "", x509.ExtKeyUsageClientAuth), ""), "cn:batch-job"},
		{"SPIFFE ID with dot segments", request(good.issue(t, "api", "spiffe://prod/ns/app/../../admin", x509.ExtKeyUsageClientAuth), ""), ""},
		{"SPIFFE ID with a query", request(good.issue(t, "api", "spiffe://prod/ns/app?x=1", x509.ExtKeyUsageClientAuth), ""), ""},
		{"certificate from another CA", request(other.issue(t, "api", "spiffe://prod/ns/pay/sa/api", x509.ExtKeyUsageClientAuth), ""), ""},
		{"server-only certificate", request(good.issue(t, "api", "", x509.ExtKeyUsageServerAuth), ""), ""},
		{"static token", request(nil, secret), "token:billing"},
		{"wrong static token", request(nil, secret+"x"), ""},
		{"JWT", request(nil, ik.sign(t, "https://k8s.example", "sigil", "system:serviceaccount:pay:api", now.Add(time.Hour))), "jwt:https://k8s.example#system:serviceaccount:pay:api"},
		{"expired JWT", request(nil, ik.sign(t, "https://k8s.example", "sigil", "x", now.Add(-time.Hour))), ""},
		{"JWT within the leeway", request(nil, ik.sign(t, "https://k8s.example", "sigil", "x", now.Add(-10*time.Second))), "jwt:https://k8s.example#x"},
		{"wrong audience", request(nil, ik.sign(t, "https://k8s.example", "other", "x", now.Add(time.Hour))), ""},
		{"no audience", request(nil, ik.sign(t, "https://k8s.example", "", "x", now.Add(time.Hour))), ""},
		{"wrong issuer", request(nil, ik.sign(t, "https://evil.example", "sigil", "x", now.Add(time.Hour))), ""},
		{"alg none", request(nil, b64(map[string]string{"alg": "none", "kid": "k1"})+"."+b64(map[string]any{"iss": "https://k8s.example", "aud": "sigil", "sub": "x", "exp": now.Add(time.Hour).Unix()})+"."), ""},
		{"HS256 keyed with the public key", request(nil, hs256), ""},
		{"no credentials", request(nil, ""), ""},
		{"bearer and a good certificate, bad bearer wins", request(good.issue(t, "api", "", x509.ExtKeyUsageClientAuth), "nope"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := a.Authenticate(tc.req)
			if tc.want == "" {
				if !errors.Is(err, ErrUnauthenticated) {
					t.Fatalf("Authenticate = %+v, %v; want ErrUnauthenticated", id, err)
				}
				return
			}
			if err != nil || id.Name != tc.want {
				t.Fatalf("Authenticate = %+v, %v; want %s", id, err, tc.want)
			}
		})
	}
	basic := request(nil, "")
	basic.Header.Set("Authorization", "Basic abc")
	if _, err := a.Authenticate(basic); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Basic auth: %v", err)
	}
}

func TestJWKSURL(t *testing.T) {
	ctx := t.Context()
	ik := newIssuerKey(t)
	body, _ := os.ReadFile(ik.file)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	t.Cleanup(srv.Close)
	a, err := New(ctx, Config{Issuers: []Issuer{{Issuer: "iss", Audience: "sigil", JWKSURL: srv.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Authenticate(request(nil, ik.sign(t, "iss", "sigil", "svc", time.Now().Add(time.Hour))))
	if err != nil || id.Name != "jwt:iss#svc" {
		t.Fatalf("Authenticate = %+v, %v", id, err)
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]Config{
		"token not a hash":    {Tokens: map[string]string{"a": "plaintext-token"}},
		"issuer without keys": {Issuers: []Issuer{{Issuer: "i", Audience: "a"}}},
		"issuer with both":    {Issuers: []Issuer{{Issuer: "i", Audience: "a", JWKSFile: "f", JWKSURL: "u"}}},
		"issuer, no audience": {Issuers: []Issuer{{Issuer: "i", JWKSFile: "f"}}},
		"missing JWKS file":   {Issuers: []Issuer{{Issuer: "i", Audience: "a", JWKSFile: "/nonexistent"}}},
		"issuer twice":        {Issuers: []Issuer{{Issuer: "i", Audience: "a", JWKSFile: "/nonexistent"}, {Issuer: "i", Audience: "a", JWKSFile: "/nonexistent"}}},
	} {
		if _, err := New(ctx, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
