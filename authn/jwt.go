package authn

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Issuer is a trusted issuer of bearer JWTs.
type Issuer struct {
	// Issuer is the exact "iss" value.
	Issuer string
	// Audience must be among the token's "aud" values.
	Audience string
	// JWKSFile or JWKSURL gives the issuer's public keys; exactly one.
	JWKSFile string
	JWKSURL  string
	// Leeway is the clock skew allowed for exp, nbf and iat; zero allows
	// none. DefaultLeeway is the usual choice.
	Leeway time.Duration
	// HTTPClient fetches JWKSURL; nil means a 10-second-timeout client.
	HTTPClient *http.Client
}

// issuer holds one trusted issuer's keys.
type issuer struct {
	cfg   Issuer
	set   jwk.Set // from a file, fixed
	cache *jwk.Cache
}

// asymmetric are the JWS algorithms accepted in bearer tokens; "none" and
// HMAC never are.
var asymmetric = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true, "EdDSA": true,
}

// DefaultLeeway is the clock skew sigild allows an issuer's tokens unless
// its configuration says otherwise.
const DefaultLeeway = 30 * time.Second

func newIssuer(ctx context.Context, cfg Issuer) (*issuer, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, fmt.Errorf("authn: an issuer needs its iss and audience")
	}
	if (cfg.JWKSFile == "") == (cfg.JWKSURL == "") {
		return nil, fmt.Errorf("authn: issuer %q needs exactly one of a JWKS file and a JWKS URL", cfg.Issuer)
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("authn: issuer %q: negative leeway", cfg.Issuer)
	}
	is := &issuer{cfg: cfg}
	if cfg.JWKSFile != "" {
		b, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("authn: issuer %q: %w", cfg.Issuer, err)
		}
		if is.set, err = jwk.Parse(b); err != nil {
			return nil, fmt.Errorf("authn: issuer %q: JWKS file: %w", cfg.Issuer, err)
		}
		return is, nil
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	cache, err := jwk.NewCache(ctx, httprc.NewClient())
	if err != nil {
		return nil, fmt.Errorf("authn: jwks cache: %w", err)
	}
	if err := cache.Register(ctx, cfg.JWKSURL, jwk.WithHTTPClient(hc)); err != nil {
		return nil, fmt.Errorf("authn: issuer %q: fetch JWKS: %w", cfg.Issuer, err)
	}
	is.cache = cache
	return is, nil
}

func (is *issuer) keys(ctx context.Context) (jwk.Set, error) {
	if is.set != nil {
		return is.set, nil
	}
	return is.cache.Lookup(ctx, is.cfg.JWKSURL)
}

// jwt verifies a bearer JWT: a trusted iss, an asymmetric alg matching the
// issuer's key for the kid, a good signature, the audience, and exp/nbf/iat
// within the leeway.
func (a *Authenticator) jwt(ctx context.Context, token string) (Identity, error) {
	msg, err := jws.Parse([]byte(token))
	if err != nil || len(msg.Signatures()) != 1 {
		return Identity{}, fmt.Errorf("%w: malformed JWT", ErrUnauthenticated)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	alg, ok := hdr.Algorithm()
	if !ok || !asymmetric[alg.String()] {
		return Identity{}, fmt.Errorf("%w: JWT algorithm not allowed", ErrUnauthenticated)
	}
	unverified, err := jwt.ParseInsecure([]byte(token))
	if err != nil {
		return Identity{}, fmt.Errorf("%w: malformed JWT claims", ErrUnauthenticated)
	}
	iss, _ := unverified.Issuer()
	is, ok := a.issuers[iss]
	if !ok {
		return Identity{}, fmt.Errorf("%w: untrusted issuer", ErrUnauthenticated)
	}
	set, err := is.keys(ctx)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: issuer keys unavailable: %v", ErrUnavailable, err)
	}
	kid, _ := hdr.KeyID()
	key, ok := set.LookupKeyID(kid)
	if !ok {
		return Identity{}, fmt.Errorf("%w: unknown kid", ErrUnauthenticated)
	}
	if ka, ok := key.Algorithm(); ok && ka.String() != alg.String() {
		return Identity{}, fmt.Errorf("%w: algorithm does not match the key", ErrUnauthenticated)
	}
	sigAlg, _ := jwa.LookupSignatureAlgorithm(alg.String())
	tok, err := jwt.Parse([]byte(token),
		jwt.WithKey(sigAlg, key),
		jwt.WithValidate(true),
		jwt.WithIssuer(is.cfg.Issuer),
		jwt.WithAudience(is.cfg.Audience),
		jwt.WithAcceptableSkew(is.cfg.Leeway),
		jwt.WithRequiredClaim("exp"),
		jwt.WithRequiredClaim("sub"),
	)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: JWT: %v", ErrUnauthenticated, err)
	}
	sub, _ := tok.Subject()
	return Identity{Name: "jwt:" + iss + "#" + sub, Method: "jwt"}, nil
}
