package client_test

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	gojwt "github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sigil-kms/sigil/client"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

var jwtAlgorithms = []struct {
	alg sigilv1.Algorithm
	jwa string
}{
	{sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256, "ES256"},
	{sigilv1.Algorithm_ALGORITHM_EC_P384_SHA384, "ES384"},
	{sigilv1.Algorithm_ALGORITHM_RSA_PSS_2048_SHA256, "PS256"},
	{sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_2048_SHA256, "RS256"},
	{sigilv1.Algorithm_ALGORITHM_ED25519, "EdDSA"},
}

func (s *sigil) signJWT(t *testing.T, name string, claims map[string]any, headers map[string]string) string {
	t.Helper()
	st, err := structpb.NewStruct(claims)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.c.SignJWT(context.Background(), &sigilv1.SignJWTRequest{Name: name, Claims: st, Headers: headers})
	if err != nil {
		t.Fatalf("SignJWT(%s): %v", name, err)
	}
	return res.GetToken()
}

// fetchJWKS fetches a JWKS document over HTTP and returns the response.
func (s *sigil) fetchJWKS(t *testing.T, path, etag string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.url+path, nil)
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	res, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func header(t *testing.T, token string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestJWTVerifiesWithIndependentLibraries signs a token per algorithm and
// verifies it with three libraries that only see the JWKS fetched over
// HTTP: lestrrat-go/jwx (through client.Verifier), go-jose, and
// golang-jwt with go-jose's parsed keys. It also recomputes each kid as an
// RFC 7638 thumbprint with go-jose.
func TestJWTVerifiesWithIndependentLibraries(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	exp := time.Now().Add(time.Hour).Unix()
	tokens := map[string]string{}
	for _, a := range jwtAlgorithms {
		name := "jwt-" + strings.ToLower(a.jwa)
		s.createKey(t, name, a.alg)
		tokens[a.jwa] = s.signJWT(t, name, map[string]any{"sub": "alice", "iss": "sigil-test", "exp": exp, "n": 12345}, nil)
	}
	_, body := s.fetchJWKS(t, "/.well-known/jwks.json", "")
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("go-jose cannot parse the JWKS: %v\n%s", err, body)
	}
	v, err := client.NewVerifier(ctx, s.url+"/.well-known/jwks.json", s.http)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range jwtAlgorithms {
		t.Run(a.jwa, func(t *testing.T) {
			token := tokens[a.jwa]
			h := header(t, token)
			if h["alg"] != a.jwa || h["typ"] != "JWT" {
				t.Fatalf("header = %v", h)
			}
			kid, _ := h["kid"].(string)
			keys := set.Key(kid)
			if len(keys) != 1 {
				t.Fatalf("JWKS has %d keys with kid %q", len(keys), kid)
			}
			tp, err := keys[0].Thumbprint(crypto.SHA256)
			if err != nil || base64.RawURLEncoding.EncodeToString(tp) != kid {
				t.Fatalf("kid %q is not the RFC 7638 thumbprint (%v)", kid, err)
			}

			// 1. lestrrat-go/jwx.
			tok, err := v.Verify(ctx, token)
			if err != nil {
				t.Fatalf("jwx: %v", err)
			}
			if sub, _ := tok.Subject(); sub != "alice" {
				t.Fatalf("jwx: sub = %q", sub)
			}

			// 2. go-jose.
			jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(a.jwa)})
			if err != nil {
				t.Fatalf("go-jose parse: %v", err)
			}
			payload, err := jws.Verify(keys[0].Key)
			if err != nil || !strings.Contains(string(payload), `"sub":"alice"`) {
				t.Fatalf("go-jose verify: %s, %v", payload, err)
			}

			// 3. golang-jwt/jwt v5.
			parsed, err := gojwt.Parse(token, func(tk *gojwt.Token) (any, error) {
				k := set.Key(tk.Header["kid"].(string))
				if len(k) != 1 {
					return nil, errors.New("unknown kid")
				}
				return k[0].Key, nil
			}, gojwt.WithValidMethods([]string{a.jwa}), gojwt.WithExpirationRequired())
			if err != nil || !parsed.Valid {
				t.Fatalf("golang-jwt: %v", err)
			}
			if n := parsed.Claims.(gojwt.MapClaims)["n"]; n != float64(12345) {
				t.Fatalf("golang-jwt: n = %v", n)
			}
		})
	}
}

// forge returns a token with the given header and payload, signed with
// sign over the signing input.
func forge(hdr, payload map[string]any, sign func([]byte) []byte) string {
	hb, _ := json.Marshal(hdr)
	pb, _ := json.Marshal(payload)
	in := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(pb)
	return in + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(in)))
}

func TestVerifierRejectsForgeries(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	s.createKey(t, "a", sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256)
	s.createKey(t, "b", sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_2048_SHA256)
	good := s.signJWT(t, "a", map[string]any{"sub": "alice"}, nil)
	kidA := header(t, good)["kid"].(string)
	kidB := header(t, s.signJWT(t, "b", map[string]any{"sub": "bob"}, nil))["kid"].(string)
	pemA, err := s.c.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := client.NewVerifier(ctx, s.url+"/.well-known/jwks.json", s.http)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatalf("genuine token rejected: %v", err)
	}
	parts := strings.Split(good, ".")
	payload := map[string]any{"sub": "mallory", "admin": true}
	hmacWith := func(key []byte) func([]byte) []byte {
		return func(in []byte) []byte {
			m := hmac.New(sha256.New, key)
			m.Write(in)
			return m.Sum(nil)
		}
	}
	none := func([]byte) []byte { return nil }
	aSig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	forgeries := map[string]string{
		"alg none":                   forge(map[string]any{"alg": "none", "kid": kidA}, payload, none),
		"alg none, no kid":           forge(map[string]any{"alg": "none"}, payload, none),
		"HS256 keyed with the PEM":   forge(map[string]any{"alg": "HS256", "kid": kidA}, payload, hmacWith([]byte(pemA.GetPem()))),
		"HS256 keyed with the JWK":   forge(map[string]any{"alg": "HS256", "kid": kidA}, payload, hmacWith([]byte(pemA.GetJwk()))),
		"a's signature, kid of b":    forge(map[string]any{"alg": "ES256", "kid": kidB}, map[string]any{"sub": "alice"}, func([]byte) []byte { return aSig }),
		"a's token relabelled RS256": forge(map[string]any{"alg": "RS256", "kid": kidB}, map[string]any{"sub": "alice"}, func([]byte) []byte { return aSig }),
		"unknown kid":                forge(map[string]any{"alg": "ES256", "kid": "nope"}, payload, func([]byte) []byte { return aSig }),
		"kid with SQL":               forge(map[string]any{"alg": "ES256", "kid": "' OR 1=1--"}, payload, func([]byte) []byte { return aSig }),
		"kid with a path":            forge(map[string]any{"alg": "ES256", "kid": "../../etc/passwd"}, payload, func([]byte) []byte { return aSig }),
		"payload swapped":            parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory"}`)) + "." + parts[2],
		"signature stripped":         parts[0] + "." + parts[1] + ".",
		"not a JWS":                  "hello",
	}
	for name, token := range forgeries {
		if _, err := v.Verify(ctx, token); !errors.Is(err, client.ErrTokenInvalid) {
			t.Errorf("%s: Verify = %v, want ErrTokenInvalid", name, err)
		}
	}
	// The global JWKS holds every Sigil signing key, so a genuine token of
	// key b verifies there; a verifier that trusts only key a uses a's
	// own JWKS and refuses it.
	tokenB := s.signJWT(t, "b", map[string]any{"sub": "bob"}, nil)
	if _, err := v.Verify(ctx, tokenB); err != nil {
		t.Fatalf("b's token on the global JWKS: %v", err)
	}
	onlyA, err := client.NewVerifier(ctx, s.url+"/v1/keys/a/jwks.json", s.http)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := onlyA.Verify(ctx, tokenB); !errors.Is(err, client.ErrTokenInvalid) {
		t.Errorf("b's genuine token on a's JWKS: %v, want ErrTokenInvalid", err)
	}
	if _, err := onlyA.Verify(ctx, good); err != nil {
		t.Errorf("a's token on a's JWKS: %v", err)
	}
	expired := s.signJWT(t, "a", map[string]any{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()}, nil)
	if _, err := v.Verify(ctx, expired); !errors.Is(err, client.ErrTokenInvalid) {
		t.Errorf("expired token: %v", err)
	}
}

func TestSignJWTHeaders(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	s.createKey(t, "k", sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256)
	tok := s.signJWT(t, "k", map[string]any{"sub": "x"}, map[string]string{"typ": "at+jwt", "cty": "json"})
	h := header(t, tok)
	if h["typ"] != "at+jwt" || h["cty"] != "json" || h["alg"] != "ES256" || h["kid"] == nil || len(h) != 4 {
		t.Fatalf("header = %v", h)
	}
	for _, bad := range []map[string]string{{"alg": "none"}, {"alg": "HS256"}, {"kid": "other"}, {"jku": "http://evil"}, {"crit": "exp"}} {
		st, _ := structpb.NewStruct(map[string]any{"sub": "x"})
		_, err := s.c.SignJWT(ctx, &sigilv1.SignJWTRequest{Name: "k", Claims: st, Headers: bad})
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("headers %v: %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := s.c.SignJWT(ctx, &sigilv1.SignJWTRequest{Name: "k"}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("no claims: %v", err)
	}
}
