package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

const (
	fuzzIssuer   = "https://k8s.example"
	fuzzAudience = "sigil"
)

// fuzzAuth is an Authenticator trusting one issuer, whose key is made at
// test time, and one static token.
type fuzzAuth struct {
	a      *Authenticator
	key    *ecdsa.PrivateKey
	secret string
}

func newFuzzAuth(tb testing.TB) fuzzAuth {
	tb.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := jwk.Import(raw.Public())
	if err != nil {
		tb.Fatal(err)
	}
	if err := errors.Join(pub.Set(jwk.KeyIDKey, "k1"), pub.Set(jwk.AlgorithmKey, jwa.ES256())); err != nil {
		tb.Fatal(err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		tb.Fatal(err)
	}
	b, err := json.Marshal(set)
	if err != nil {
		tb.Fatal(err)
	}
	file := filepath.Join(tb.TempDir(), "jwks.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		tb.Fatal(err)
	}
	fa := fuzzAuth{key: raw, secret: hex.EncodeToString(secret)}
	sum := sha256.Sum256([]byte(fa.secret))
	fa.a, err = New(context.Background(), Config{
		Tokens:  map[string]string{"billing": hex.EncodeToString(sum[:])},
		Issuers: []Issuer{{Issuer: fuzzIssuer, Audience: fuzzAudience, JWKSFile: file, Leeway: DefaultLeeway}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return fa
}

// sign returns a JWT of the trusted issuer, signed now.
func (fa fuzzAuth) sign(tb testing.TB, sub string, exp time.Time) string {
	tb.Helper()
	priv, err := jwk.Import(fa.key)
	if err != nil {
		tb.Fatal(err)
	}
	if err := priv.Set(jwk.KeyIDKey, "k1"); err != nil {
		tb.Fatal(err)
	}
	tok, err := jwt.NewBuilder().Issuer(fuzzIssuer).Audience([]string{fuzzAudience}).Subject(sub).
		IssuedAt(time.Now()).Expiration(exp).Build()
	if err != nil {
		tb.Fatal(err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), priv))
	if err != nil {
		tb.Fatal(err)
	}
	return string(signed)
}

// segment returns the JSON of a base64url segment of an unsigned token.
func segment(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// FuzzAuthenticate sends arbitrary Authorization headers. Authenticate
// never panics, and refuses with ErrUnauthenticated (never ErrUnavailable:
// the issuer's keys are a file) unless the header carries the static
// token, or a JWT that independently verifies: an ES256 signature by the
// issuer's key over its first two segments, the trusted iss, the audience,
// an exp not past the leeway, and a sub that, with iss, makes the
// identity's name.
func FuzzAuthenticate(f *testing.F) {
	fa := newFuzzAuth(f)
	now := time.Now()
	// Tokens signed by a key made now: never written to testdata.
	good := fa.sign(f, "system:serviceaccount:pay:api", now.Add(time.Hour))
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Authorization", "Bearer "+good)
	if id, err := fa.a.Authenticate(r); err != nil || id.Name != "jwt:"+fuzzIssuer+"#system:serviceaccount:pay:api" {
		f.Fatalf("the seed token is refused: %+v, %v", id, err)
	}
	f.Add("Bearer " + good)
	f.Add("bearer " + good)
	f.Add("Bearer " + fa.sign(f, "x", now.Add(-time.Hour)))
	f.Add("Bearer " + good + "=")
	f.Add("Bearer " + good[:len(good)-1])
	f.Add("Bearer  " + good)
	claims := map[string]any{"iss": fuzzIssuer, "aud": fuzzAudience, "sub": "x", "exp": now.Add(time.Hour).Unix()}
	f.Add("Bearer " + segment(map[string]string{"alg": "none", "kid": "k1"}) + "." + segment(claims) + ".")
	f.Add("Bearer " + segment(map[string]string{"alg": "HS256", "kid": "k1"}) + "." + segment(claims) + ".c2ln")
	f.Add("Bearer " + segment(map[string]any{"alg": "ES256", "kid": "k1", "b64": false, "crit": []string{"b64"}}) + "." + segment(claims) + ".")
	f.Add("Bearer " + segment(map[string]string{"alg": "ES256", "kid": "k2"}) + "." + segment(claims) + ".AAAA")
	f.Add("Bearer a.b.c")
	f.Add("Bearer ..")
	f.Add("Bearer not-the-token")
	f.Add("Basic YTpi")
	f.Add("Bearer")
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("Authorization", header)
		id, err := fa.a.Authenticate(r)
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrUnavailable) {
				t.Fatalf("Authenticate(%q) = %v; want only ErrUnauthenticated", header, err)
			}
			if id != (Identity{}) {
				t.Fatalf("a refusal returned identity %+v", id)
			}
			return
		}
		scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			t.Fatalf("Authenticate(%q) = %+v without a bearer credential", header, id)
		}
		if cred == fa.secret {
			if id != (Identity{Name: "token:billing", Method: "token"}) {
				t.Fatalf("static token gave %+v", id)
			}
			return
		}
		fa.checkJWT(t, cred, id)
	})
}

// checkJWT checks that the JWT Authenticate accepted verifies without the
// JWT library, and names the identity.
func (fa fuzzAuth) checkJWT(t *testing.T, token string, id Identity) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("accepted %q, which is not three segments", token)
	}
	b64 := base64.RawURLEncoding
	hb, herr := b64.DecodeString(parts[0])
	pb, perr := b64.DecodeString(parts[1])
	if herr != nil || perr != nil {
		t.Fatalf("accepted %q, whose header or payload is not base64url", token)
	}
	sig, err := b64.DecodeString(strings.TrimRight(parts[2], "="))
	if err != nil {
		// Padded or standard base64 for the signature does not change
		// what was signed.
		sig, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(parts[2], "="))
	}
	if err != nil || len(sig) != 64 {
		t.Fatalf("accepted %q, whose signature is not 64 bytes of base64", token)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(&fa.key.PublicKey, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatalf("accepted %q, whose signature does not verify", token)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	var claims struct {
		Iss string          `json:"iss"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Exp *float64        `json:"exp"`
	}
	if json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "ES256" || json.Unmarshal(pb, &claims) != nil {
		t.Fatalf("accepted header %s, claims %s", hb, pb)
	}
	var auds []string
	if json.Unmarshal(claims.Aud, &auds) != nil {
		var aud string
		_ = json.Unmarshal(claims.Aud, &aud)
		auds = []string{aud}
	}
	audOK := false
	for _, a := range auds {
		audOK = audOK || a == fuzzAudience
	}
	leeway := DefaultLeeway
	if claims.Iss != fuzzIssuer || !audOK || claims.Exp == nil || *claims.Exp < float64(time.Now().Add(-leeway-time.Second).Unix()) || claims.Sub == "" {
		t.Fatalf("accepted claims %s", pb)
	}
	if id != (Identity{Name: "jwt:" + claims.Iss + "#" + claims.Sub, Method: "jwt"}) {
		t.Fatalf("claims %s gave identity %+v", pb, id)
	}
}
