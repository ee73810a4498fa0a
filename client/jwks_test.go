package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sigil-kms/sigil/client"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

type jwksDoc struct {
	Keys []map[string]any `json:"keys"`
}

func kids(t *testing.T, body []byte) []string {
	t.Helper()
	var doc jwksDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("JWKS is not JSON: %v\n%s", err, body)
	}
	var out []string
	for _, k := range doc.Keys {
		out = append(out, k["kid"].(string))
	}
	return out
}

func TestJWKSAfterRotation(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	s.createKey(t, "login", sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256)
	before := s.signJWT(t, "login", map[string]any{"sub": "early"}, nil)

	res, body := s.fetchJWKS(t, "/v1/keys/login/jwks.json", "")
	etag1 := res.Header.Get("ETag")
	if res.StatusCode != 200 || etag1 == "" || res.Header.Get("Cache-Control") != "public, max-age=300" ||
		res.Header.Get("Content-Type") != "application/jwk-set+json" || len(kids(t, body)) != 1 {
		t.Fatalf("JWKS: %d %v %s", res.StatusCode, res.Header, body)
	}
	if res, body := s.fetchJWKS(t, "/v1/keys/login/jwks.json", etag1); res.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Fatalf("If-None-Match with the current ETag = %d %q", res.StatusCode, body)
	}
	if _, err := s.c.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "login", Immediate: true}); err != nil {
		t.Fatal(err)
	}
	res, body = s.fetchJWKS(t, "/v1/keys/login/jwks.json", etag1)
	etag2 := res.Header.Get("ETag")
	if res.StatusCode != 200 || etag2 == etag1 {
		t.Fatalf("after rotation, old ETag = %d, ETag %s -> %s", res.StatusCode, etag1, etag2)
	}
	got := kids(t, body)
	if len(got) != 2 || got[0] == got[1] {
		t.Fatalf("JWKS after rotation has kids %v, want two distinct", got)
	}
	// Same set, same ETag.
	if res, _ := s.fetchJWKS(t, "/v1/keys/login/jwks.json", ""); res.Header.Get("ETag") != etag2 {
		t.Fatalf("ETag changed without a change: %s -> %s", etag2, res.Header.Get("ETag"))
	}
	after := s.signJWT(t, "login", map[string]any{"sub": "late"}, nil)
	if header(t, before)["kid"] == header(t, after)["kid"] || header(t, after)["kid"] != got[1] {
		t.Fatalf("kids: before %v, after %v, JWKS %v", header(t, before)["kid"], header(t, after)["kid"], got)
	}
	for _, path := range []string{"/v1/keys/login/jwks.json", "/.well-known/jwks.json"} {
		v, err := client.NewVerifier(ctx, s.url+path, s.http)
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{before, after} {
			if _, err := v.Verify(ctx, tok); err != nil {
				t.Fatalf("%s: token %s: %v", path, header(t, tok)["kid"], err)
			}
		}
	}
}

func TestJWKSHasOnlyPublicMembers(t *testing.T) {
	s := start(t)
	for _, a := range jwtAlgorithms {
		s.createKey(t, "pub-"+strings.ToLower(a.jwa), a.alg)
	}
	s.createKey(t, "secret", sigilv1.Algorithm_ALGORITHM_AES_256_GCM)
	res, body := s.fetchJWKS(t, "/.well-known/jwks.json", "")
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	var doc jwksDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != len(jwtAlgorithms) {
		t.Fatalf("JWKS has %d keys, want %d (the AES key must not appear)", len(doc.Keys), len(jwtAlgorithms))
	}
	allowed := map[string]map[string]bool{
		"EC":  {"kty": true, "kid": true, "use": true, "alg": true, "crv": true, "x": true, "y": true},
		"RSA": {"kty": true, "kid": true, "use": true, "alg": true, "n": true, "e": true},
		"OKP": {"kty": true, "kid": true, "use": true, "alg": true, "crv": true, "x": true},
	}
	seen := map[string]bool{}
	for _, k := range doc.Keys {
		kty, _ := k["kty"].(string)
		if allowed[kty] == nil {
			t.Fatalf("unexpected kty in %v", k)
		}
		for member := range k {
			if !allowed[kty][member] {
				t.Errorf("%s key has member %q", kty, member)
			}
		}
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth"} {
			if _, ok := k[private]; ok {
				t.Errorf("%s key has private member %q", kty, private)
			}
		}
		if k["use"] != "sig" || k["alg"] == nil || len(allowed[kty]) != len(k) {
			t.Errorf("key %v lacks use, alg or a required member", k)
		}
		kid := k["kid"].(string)
		if seen[kid] {
			t.Errorf("duplicate kid %s", kid)
		}
		seen[kid] = true
	}
	for path, want := range map[string]int{"/v1/keys/nope/jwks.json": 404, "/v1/keys/secret/jwks.json": 400, "/v1/keys/..%2f..%2fx/jwks.json": 400} {
		if res, _ := s.fetchJWKS(t, path, ""); res.StatusCode != want {
			t.Errorf("%s = %d, want %d", path, res.StatusCode, want)
		}
	}
	for _, a := range jwtAlgorithms {
		if _, err := s.c.GetPublicKey(context.Background(), &sigilv1.GetPublicKeyRequest{Name: "pub-" + strings.ToLower(a.jwa)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.hsm.TotalCalls() - s.hsm.Calls("GenerateKey"); n != 0 {
		t.Errorf("JWKS and GetPublicKey made %d HSM calls", n)
	}
}
