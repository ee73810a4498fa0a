package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	auditpg "github.com/sigil-kms/sigil/audit/postgres"
	"github.com/sigil-kms/sigil/authn"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/hsm/pkcs11"
	"github.com/sigil-kms/sigil/keystore/postgres"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/policy"
	"github.com/sigil-kms/sigil/softhsm"
)

const realPolicy = `
rules:
  - identities: ["spiffe://test/admin"]
    keys: ["*"]
    allow: ["admin", "*"]
  - identities: ["jwt:https://issuer.test#svc-a"]
    keys: ["a"]
    allow: ["encrypt"]
`

// pki makes certificates for one CA.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(t *testing.T) pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return pki{cert, key}
}

func (p pki) client(t *testing.T, spiffe string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(spiffe)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "client"}, URIs: []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type realAccess struct {
	ca     pki
	srv    *httptest.Server
	dbURL  string
	issuer jwk.Key
	mtls   func(cert *tls.Certificate) sigilv1connect.KeyManagementServiceClient
	bearer func(token string) sigilv1connect.KeyManagementServiceClient
}

// startRealAccess serves Sigil over SoftHSM and Postgres with mTLS and a
// JWT issuer, the policy above and the Postgres audit log.
func startRealAccess(t *testing.T) realAccess {
	t.Helper()
	ctx := context.Background()
	tok := softhsm.NewToken(t)
	dbURL := postgrestest.NewDatabase(t)
	store, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	auditLog, err := auditpg.Open(ctx, dbURL, auditpg.Options{WriteTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = auditLog.Close() })
	b, err := pkcs11.Open(ctx, pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	ca := newPKI(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	raw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issuer, _ := jwk.Import(raw)
	_ = issuer.Set(jwk.KeyIDKey, "k1")
	_ = issuer.Set(jwk.AlgorithmKey, jwa.ES256())
	pub, _ := issuer.PublicKey()
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	jwks, _ := json.Marshal(set)
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := authn.New(ctx, authn.Config{ClientCAs: pool, Issuers: []authn.Issuer{{Issuer: "https://issuer.test", Audience: "sigil", JWKSFile: jwksFile, Leeway: authn.DefaultLeeway}}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse([]byte(realPolicy))
	if err != nil {
		t.Fatal(err)
	}
	h := New(kms.New(b, store), Options{Logger: slog.New(slog.DiscardHandler), Authenticator: a,
		Policy: func() *policy.Policy { return p }, Audit: auditLog, AuditSalt: []byte("0123456789abcdef")})
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	mk := func(cert *tls.Certificate, token string) sigilv1connect.KeyManagementServiceClient {
		cfg := &tls.Config{RootCAs: roots}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		var rt http.RoundTripper = &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
		if token != "" {
			rt = bearerRT{token, rt}
		}
		return sigilv1connect.NewKeyManagementServiceClient(&http.Client{Transport: rt}, srv.URL)
	}
	return realAccess{
		ca: ca, srv: srv, dbURL: dbURL, issuer: issuer,
		mtls:   func(c *tls.Certificate) sigilv1connect.KeyManagementServiceClient { return mk(c, "") },
		bearer: func(tok string) sigilv1connect.KeyManagementServiceClient { return mk(nil, tok) },
	}
}

type bearerRT struct {
	token string
	next  http.RoundTripper
}

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func (ra realAccess) jwt(t *testing.T, iss, aud, sub string, exp time.Time) string {
	t.Helper()
	tok, _ := jwt.NewBuilder().Issuer(iss).Audience([]string{aud}).Subject(sub).Expiration(exp).Build()
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), ra.issuer))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

// auditRows returns the number of rows in the audit log and the last one's
// identity and outcome.
func (ra realAccess) auditRows(t *testing.T) (int, string, string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), ra.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	var identity, outcome string
	err = conn.QueryRow(context.Background(), `SELECT count(*), coalesce((SELECT identity FROM audit_log ORDER BY seq DESC LIMIT 1), ''),
		coalesce((SELECT outcome FROM audit_log ORDER BY seq DESC LIMIT 1), '') FROM audit_log`).Scan(&n, &identity, &outcome)
	if err != nil {
		t.Fatal(err)
	}
	return n, identity, outcome
}

func TestRealAccessMatrix(t *testing.T) {
	ctx := context.Background()
	ra := startRealAccess(t)
	adminCert := ra.ca.client(t, "spiffe://test/admin")
	admin := ra.mtls(&adminCert)
	for _, name := range []string{"a", "b"} {
		if _, err := admin.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: name, Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "s", Algorithm: sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256}); err != nil {
		t.Fatal(err)
	}
	foreign := newPKI(t).client(t, "spiffe://test/admin")
	now := time.Now()
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"k1"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://issuer.test","aud":"sigil","sub":"svc-a","exp":`+jsonInt(now.Add(time.Hour).Unix())+`}`)) + "."
	tests := []struct {
		name     string
		client   sigilv1connect.KeyManagementServiceClient
		key      string
		code     connect.Code
		identity string
	}{
		{"no credentials", ra.mtls(nil), "a", connect.CodeUnauthenticated, ""},
		{"client certificate from another CA", ra.mtls(&foreign), "a", connect.CodeUnauthenticated, ""},
		{"expired JWT", ra.bearer(ra.jwt(t, "https://issuer.test", "sigil", "svc-a", now.Add(-time.Hour))), "a", connect.CodeUnauthenticated, ""},
		{"JWT for another audience", ra.bearer(ra.jwt(t, "https://issuer.test", "other", "svc-a", now.Add(time.Hour))), "a", connect.CodeUnauthenticated, ""},
		{"JWT from another issuer", ra.bearer(ra.jwt(t, "https://evil.test", "sigil", "svc-a", now.Add(time.Hour))), "a", connect.CodeUnauthenticated, ""},
		{"alg none JWT", ra.bearer(none), "a", connect.CodeUnauthenticated, ""},
		{"JWT with no rule", ra.bearer(ra.jwt(t, "https://issuer.test", "sigil", "svc-z", now.Add(time.Hour))), "a", connect.CodePermissionDenied, "jwt:https://issuer.test#svc-z"},
		{"allowed on a, used on b", ra.bearer(ra.jwt(t, "https://issuer.test", "sigil", "svc-a", now.Add(time.Hour))), "b", connect.CodePermissionDenied, "jwt:https://issuer.test#svc-a"},
		{"allowed on a", ra.bearer(ra.jwt(t, "https://issuer.test", "sigil", "svc-a", now.Add(time.Hour))), "a", 0, "jwt:https://issuer.test#svc-a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _, _ := ra.auditRows(t)
			_, err := tc.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: tc.key, Plaintext: []byte("p")})
			if connect.CodeOf(err) != tc.code && !(tc.code == 0 && err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.code)
			}
			after, identity, outcome := ra.auditRows(t)
			want := "ok"
			if tc.code != 0 {
				want = tc.code.String()
			}
			if after != before+1 || identity != tc.identity || outcome != want {
				t.Fatalf("audit rows %d -> %d, last identity %q outcome %q; want one row, %q, %q", before, after, identity, outcome, tc.identity, want)
			}
		})
	}
	// The encrypt-only identity cannot decrypt or rotate.
	svcA := ra.bearer(ra.jwt(t, "https://issuer.test", "sigil", "svc-a", now.Add(time.Hour)))
	enc, err := admin.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "a", Plaintext: []byte("p")})
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"Decrypt": func() error {
			_, err := svcA.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "a", Ciphertext: enc.GetCiphertext()})
			return err
		},
		"RotateKey": func() error {
			_, err := svcA.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "a"})
			return err
		},
	} {
		before, _, _ := ra.auditRows(t)
		if err := call(); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("encrypt-only %s: %v", name, err)
		}
		after, identity, outcome := ra.auditRows(t)
		if after != before+1 || identity != "jwt:https://issuer.test#svc-a" || outcome != "permission_denied" {
			t.Fatalf("encrypt-only %s: audit rows %d -> %d, %q %q", name, before, after, identity, outcome)
		}
	}

	// With the audit insert failing, Encrypt, Decrypt and Sign return
	// Unavailable and no payload.
	conn, err := pgx.Connect(ctx, ra.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `ALTER TABLE audit_log ADD CONSTRAINT refuse_all CHECK (false) NOT VALID`); err != nil {
		t.Fatal(err)
	}
	r1, err := admin.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "a", Plaintext: []byte("p")})
	wantCode(t, err, connect.CodeUnavailable)
	r2, err := admin.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "a", Ciphertext: enc.GetCiphertext()})
	wantCode(t, err, connect.CodeUnavailable)
	r3, err := admin.Sign(ctx, &sigilv1.SignRequest{Name: "s", Input: &sigilv1.SignRequest_Message{Message: []byte("m")}})
	wantCode(t, err, connect.CodeUnavailable)
	if r1 != nil || r2 != nil || r3 != nil {
		t.Fatal("a payload came back while the audit log could not be written")
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE audit_log DROP CONSTRAINT refuse_all`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "a", Ciphertext: enc.GetCiphertext()}); err != nil {
		t.Fatalf("after the audit log recovered: %v", err)
	}
	checked, bad, err := auditpg.VerifyDatabase(ctx, ra.dbURL)
	if err != nil || bad != 0 || checked == 0 {
		t.Fatalf("audit chain: %d checked, first bad %d, %v", checked, bad, err)
	}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
