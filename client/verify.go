package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// ErrTokenInvalid is returned, wrapped, for every token that does not
// verify: a bad signature, an unknown kid, a forbidden alg, bad claims.
var ErrTokenInvalid = errors.New("client: token invalid")

// allowedAlgs are the JWS algorithms Sigil signs with. Anything else,
// including "none" and every HMAC algorithm, is refused before any key is
// looked up (RFC 8725 section 3.1).
var allowedAlgs = map[string]bool{"ES256": true, "ES384": true, "PS256": true, "RS256": true, "EdDSA": true}

// Verifier checks JWTs signed by Sigil against the JWKS at one URL. It
// caches the key set, refreshes it in the background until the context
// given to NewVerifier ends, and refetches it (at most once per
// MinRefetch) when a token names a kid it does not know.
type Verifier struct {
	url   string
	cache *jwk.Cache
	// MinRefetch is the least time between refetches caused by unknown
	// kids, so that tokens with made-up kids cannot flood the server.
	MinRefetch time.Duration

	mu          sync.Mutex
	lastRefetch time.Time
}

// NewVerifier fetches the JWKS at jwksURL (for example
// "https://sigil:8380/v1/keys/login/jwks.json") and returns a Verifier for
// it. A nil httpClient means a client with a 10-second timeout.
func NewVerifier(ctx context.Context, jwksURL string, httpClient *http.Client) (*Verifier, error) {
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 10 * time.Second}
	}
	cache, err := jwk.NewCache(ctx, httprc.NewClient())
	if err != nil {
		return nil, fmt.Errorf("client: jwks cache: %w", err)
	}
	if err := cache.Register(ctx, jwksURL, jwk.WithHTTPClient(httpClient)); err != nil {
		return nil, fmt.Errorf("client: fetch %s: %w", jwksURL, err)
	}
	return &Verifier{url: jwksURL, cache: cache, MinRefetch: 30 * time.Second}, nil
}

// Verify checks the token's signature against the JWKS and validates its
// exp, nbf and iat claims (with the given options, for example
// jwt.WithAudience). It returns the parsed token, or an error wrapping
// ErrTokenInvalid.
func (v *Verifier) Verify(ctx context.Context, token string, opts ...jwt.ValidateOption) (jwt.Token, error) {
	msg, err := jws.Parse([]byte(token))
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrTokenInvalid)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	alg, ok := hdr.Algorithm()
	if !ok || !allowedAlgs[alg.String()] {
		return nil, fmt.Errorf("%w: algorithm not allowed", ErrTokenInvalid)
	}
	kid, ok := hdr.KeyID()
	if !ok || kid == "" {
		return nil, fmt.Errorf("%w: no kid", ErrTokenInvalid)
	}
	set, err := v.keySet(ctx, kid)
	if err != nil {
		return nil, err
	}
	key, ok := set.LookupKeyID(kid)
	if !ok {
		return nil, fmt.Errorf("%w: unknown kid", ErrTokenInvalid)
	}
	keyAlg, ok := key.Algorithm()
	if !ok || keyAlg.String() != alg.String() {
		return nil, fmt.Errorf("%w: algorithm does not match the key", ErrTokenInvalid)
	}
	sigAlg, _ := jwa.LookupSignatureAlgorithm(alg.String())
	parseOpts := []jwt.ParseOption{jwt.WithKey(sigAlg, key), jwt.WithValidate(true)}
	for _, o := range opts {
		parseOpts = append(parseOpts, o)
	}
	tok, err := jwt.Parse([]byte(token), parseOpts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	return tok, nil
}

// keySet returns the cached set, refetched once if it lacks kid and the
// last refetch is old enough.
func (v *Verifier) keySet(ctx context.Context, kid string) (jwk.Set, error) {
	set, err := v.cache.Lookup(ctx, v.url)
	if err != nil {
		return nil, fmt.Errorf("client: jwks: %w", err)
	}
	if _, ok := set.LookupKeyID(kid); ok {
		return set, nil
	}
	v.mu.Lock()
	due := time.Since(v.lastRefetch) >= v.MinRefetch
	if due {
		v.lastRefetch = time.Now()
	}
	v.mu.Unlock()
	if !due {
		return set, nil
	}
	if fresh, err := v.cache.Refresh(ctx, v.url); err == nil {
		return fresh, nil
	}
	return set, nil
}
