// Package authn establishes who is calling Sigil: a client certificate
// (mTLS) from a configured CA, a bearer JWT from a trusted issuer (for
// example a Kubernetes service-account token), or a static bearer token
// whose SHA-256 hash is configured.
//
// An Authenticator is safe for concurrent use.
package authn

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// ErrUnauthenticated is returned, wrapped with the reason, for a request
// without a valid identity. The reason is for logs, not for the caller.
var ErrUnauthenticated = errors.New("authn: unauthenticated")

// ErrUnavailable is returned, wrapped, when a credential cannot be checked
// right now (an issuer's JWKS cannot be fetched); the caller may retry.
var ErrUnavailable = errors.New("authn: unavailable")

// Identity is an authenticated caller.
type Identity struct {
	// Name is the identity policies refer to: the SPIFFE ID or "cn:<CN>"
	// of a client certificate, "jwt:<iss>#<sub>" of a bearer JWT, or
	// "token:<name>" of a static token.
	Name string
	// Method is "mtls", "jwt" or "token".
	Method string
}

// Config says which credentials are accepted. Any combination may be set.
type Config struct {
	// ClientCAs verifies client certificates; nil disables mTLS. The
	// server must request (not require) client certificates, so that a
	// certificate from another CA reaches Authenticate and is refused
	// there, with an audit record, rather than in the handshake.
	ClientCAs *x509.CertPool
	// Tokens maps a static token's name to the hex SHA-256 of the token.
	// The tokens themselves are never configured.
	Tokens map[string]string
	// Issuers are the trusted JWT issuers.
	Issuers []Issuer
}

// Authenticator checks the credentials of requests.
type Authenticator struct {
	cas     *x509.CertPool
	tokens  []staticToken
	issuers map[string]*issuer
}

type staticToken struct {
	name string
	hash [32]byte
}

// New returns an Authenticator for cfg. It fetches or reads every issuer's
// JWKS once, and keeps URL sets fresh until ctx ends.
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	a := &Authenticator{cas: cfg.ClientCAs, issuers: make(map[string]*issuer)}
	names := make([]string, 0, len(cfg.Tokens))
	for name := range cfg.Tokens {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		h, err := hex.DecodeString(cfg.Tokens[name])
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("authn: token %q: want the hex SHA-256 of the token", name)
		}
		t := staticToken{name: name}
		copy(t.hash[:], h)
		a.tokens = append(a.tokens, t)
	}
	for _, ic := range cfg.Issuers {
		if _, dup := a.issuers[ic.Issuer]; dup {
			return nil, fmt.Errorf("authn: issuer %q configured twice", ic.Issuer)
		}
		is, err := newIssuer(ctx, ic)
		if err != nil {
			return nil, err
		}
		a.issuers[ic.Issuer] = is
	}
	return a, nil
}

// Authenticate returns the identity of the request: from its bearer
// credential if it has one, else from its client certificate. A bad
// credential is refused even if another one would be good.
func (a *Authenticator) Authenticate(r *http.Request) (Identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" {
			return Identity{}, fmt.Errorf("%w: malformed Authorization header", ErrUnauthenticated)
		}
		if strings.Count(cred, ".") == 2 {
			return a.jwt(r.Context(), cred)
		}
		return a.token(cred)
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return a.certificate(r.TLS.PeerCertificates)
	}
	return Identity{}, fmt.Errorf("%w: no credentials", ErrUnauthenticated)
}

// token checks a static bearer token against the configured hashes, in
// constant time per hash.
func (a *Authenticator) token(cred string) (Identity, error) {
	sum := sha256.Sum256([]byte(cred))
	found := ""
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.hash[:]) == 1 {
			found = t.name
		}
	}
	if found == "" {
		return Identity{}, fmt.Errorf("%w: unknown bearer token", ErrUnauthenticated)
	}
	return Identity{Name: "token:" + found, Method: "token"}, nil
}

// certificate verifies a client certificate chain against the CAs and
// names its identity: the SPIFFE ID of its URI SAN, else its subject CN.
func (a *Authenticator) certificate(chain []*x509.Certificate) (Identity, error) {
	if a.cas == nil {
		return Identity{}, fmt.Errorf("%w: client certificates are not accepted", ErrUnauthenticated)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.cas, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return Identity{}, fmt.Errorf("%w: client certificate: %v", ErrUnauthenticated, err)
	}
	for _, u := range leaf.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if !validSPIFFE(u) {
			return Identity{}, fmt.Errorf("%w: malformed SPIFFE ID in the client certificate", ErrUnauthenticated)
		}
		return Identity{Name: u.String(), Method: "mtls"}, nil
	}
	if leaf.Subject.CommonName == "" {
		return Identity{}, fmt.Errorf("%w: client certificate has neither a SPIFFE ID nor a CN", ErrUnauthenticated)
	}
	return Identity{Name: "cn:" + leaf.Subject.CommonName, Method: "mtls"}, nil
}

// validSPIFFE reports whether u is a SPIFFE ID as the SPIFFE standard
// defines it: a trust domain, a path of non-empty segments other than "."
// and "..", and no user, port, query or fragment. Policies match IDs by
// their text, so "spiffe://td/ns/a/../../admin" must never pass.
func validSPIFFE(u *url.URL) bool {
	if u.Host == "" || u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return false
	}
	if u.Path == "" {
		return true
	}
	for _, seg := range strings.Split(strings.TrimPrefix(u.Path, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return strings.HasPrefix(u.Path, "/")
}
