package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sigil-kms/sigil/authn"
	"github.com/sigil-kms/sigil/policy"
)

// security is what sigild needs to authenticate callers, authorize them
// and key the audit log's HMACs. In development mode auth and policy are
// nil.
type security struct {
	auth   *authn.Authenticator
	policy *policy.Holder
	salt   []byte
	// methods names the authentication methods configured, for the start
	// log line.
	methods []string
}

// loadSecurity reads the policy file, the client CA bundle, the
// authentication config and the audit salt named by c. ctx bounds the
// fetching of JWKS URLs at start and ends their refreshing.
func loadSecurity(ctx context.Context, c config) (*security, error) {
	var s security
	var err error
	if c.auditSaltFile != "" {
		if s.salt, err = readSalt(c.auditSaltFile); err != nil {
			return nil, err
		}
	} else if c.dev {
		// A per-process salt: HMACs in the audit log of a dev server can be
		// compared only within one run, which is enough for development.
		s.salt = make([]byte, 32)
		if _, err := rand.Read(s.salt); err != nil {
			return nil, fmt.Errorf("audit salt: %w", err)
		}
	}
	if c.dev {
		return &s, nil
	}
	if s.policy, err = policy.NewHolder(c.policyFile); err != nil {
		return nil, fmt.Errorf("--policy-file: %w", err)
	}
	var cfg authn.Config
	if c.clientCAFile != "" {
		if cfg.ClientCAs, err = readCAs(c.clientCAFile); err != nil {
			return nil, err
		}
		s.methods = append(s.methods, "mtls")
	}
	if c.authConfig != "" {
		af, err := readAuthConfig(c.authConfig)
		if err != nil {
			return nil, err
		}
		cfg.Tokens = af.Tokens
		cfg.Issuers = af.issuers()
		if len(cfg.Tokens) > 0 {
			s.methods = append(s.methods, "token")
		}
		if len(cfg.Issuers) > 0 {
			s.methods = append(s.methods, "jwt")
		}
	}
	if len(s.methods) == 0 {
		return nil, fmt.Errorf("no authentication method: --auth-config %s has no tokens and no issuers, and no --client-ca-file is given", c.authConfig)
	}
	if s.auth, err = authn.New(ctx, cfg); err != nil {
		return nil, fmt.Errorf("authentication: %w", err)
	}
	return &s, nil
}

// minSaltBytes is the shortest audit salt accepted.
const minSaltBytes = 16

// readSalt reads the audit salt file, dropping a trailing newline. The file
// must be private (see openSecret): whoever has the salt can test guesses
// of associated data against the audit log's HMACs.
func readSalt(path string) ([]byte, error) {
	b, err := readSecret("audit-salt-file", path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) < minSaltBytes {
		return nil, fmt.Errorf("--audit-salt-file: %s holds %d bytes; want at least %d random bytes (for example: head -c 32 /dev/urandom > %s)", path, len(b), minSaltBytes, path)
	}
	return b, nil
}

// readCAs reads a PEM bundle of CA certificates. Every block must be a
// certificate that parses, and there must be at least one.
func readCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--client-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return nil, fmt.Errorf("--client-ca-file: %s: text after certificate %d is not PEM", path, n)
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("--client-ca-file: %s: block %d is a %q, want only CERTIFICATE blocks", path, n+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("--client-ca-file: %s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("--client-ca-file: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// authFile is the YAML authentication config of --auth-config:
//
//	tokens:                      # static bearer tokens: name -> hex SHA-256
//	  billing-batch: 9f86d0…
//	issuers:                     # trusted JWT issuers
//	  - issuer: https://kubernetes.default.svc.cluster.local
//	    audience: sigil
//	    jwks_url: https://…/openid/v1/jwks   # or jwks_file: /path
//	    leeway: 30s
type authFile struct {
	Tokens  map[string]string `yaml:"tokens"`
	Issuers []issuerFile      `yaml:"issuers"`
}

// issuerFile is one entry of authFile.Issuers.
type issuerFile struct {
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	JWKSFile string `yaml:"jwks_file"`
	JWKSURL  string `yaml:"jwks_url"`
	Leeway   string `yaml:"leeway"`

	leeway time.Duration
}

// maxLeeway is the largest clock skew an issuer may be given.
const maxLeeway = 5 * time.Minute

// tokenName is what a static token's name may look like; it becomes the
// identity "token:<name>" that policies match with globs.
var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// readAuthConfig reads and checks the authentication config at path. Unknown
// fields are refused, and every error names the file and the field. The
// file must be private (see openSecret), as the token hashes are unsalted:
// a weak token could be found from its hash.
func readAuthConfig(path string) (*authFile, error) {
	b, err := readSecret("auth-config", path)
	if err != nil {
		return nil, err
	}
	af, err := parseAuthConfig(b)
	if err != nil {
		return nil, fmt.Errorf("--auth-config %s: %w", path, err)
	}
	return af, nil
}

// parseAuthConfig parses and checks an authentication config.
func parseAuthConfig(b []byte) (*authFile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var af authFile
	if err := dec.Decode(&af); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty; want tokens and/or issuers")
		}
		return nil, err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document; want one")
	}
	var errs []error
	names := make([]string, 0, len(af.Tokens))
	for name := range af.Tokens {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !tokenName.MatchString(name) {
			errs = append(errs, fmt.Errorf("tokens: name %q: want 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", name))
		}
		// The value is never printed: if someone put the token itself here,
		// it must not end up in a log.
		if h, err := hex.DecodeString(af.Tokens[name]); err != nil || len(h) != 32 {
			errs = append(errs, fmt.Errorf("tokens.%s: want the 64 hex digits of the token's SHA-256 (printf %%s \"$TOKEN\" | sha256sum), never the token itself", name))
		}
	}
	seen := make(map[string]bool)
	for i := range af.Issuers {
		is := &af.Issuers[i]
		at := fmt.Sprintf("issuers[%d]", i)
		if is.Issuer == "" {
			errs = append(errs, fmt.Errorf("%s.issuer: required (the exact \"iss\" of the tokens)", at))
		} else if seen[is.Issuer] {
			errs = append(errs, fmt.Errorf("%s.issuer: %q is configured twice", at, is.Issuer))
		}
		seen[is.Issuer] = true
		if is.Audience == "" {
			errs = append(errs, fmt.Errorf("%s.audience: required (an \"aud\" value the tokens must carry)", at))
		}
		switch {
		case (is.JWKSFile == "") == (is.JWKSURL == ""):
			errs = append(errs, fmt.Errorf("%s: give exactly one of jwks_file and jwks_url", at))
		case is.JWKSURL != "":
			if err := checkJWKSURL(is.JWKSURL); err != nil {
				errs = append(errs, fmt.Errorf("%s.jwks_url: %w", at, err))
			}
		}
		is.leeway = authn.DefaultLeeway
		if is.Leeway != "" {
			d, err := time.ParseDuration(is.Leeway)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s.leeway: %q is not a duration such as 30s", at, is.Leeway))
			case d < 0 || d > maxLeeway:
				errs = append(errs, fmt.Errorf("%s.leeway: %s is outside 0s to %s", at, d, maxLeeway))
			default:
				is.leeway = d
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &af, nil
}

// checkJWKSURL requires https, except on loopback hosts: keys fetched over
// cleartext could be replaced on the way.
func checkJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	if u.Scheme == "https" || u.Scheme == "http" && loopback(net.JoinHostPort(u.Hostname(), "0")) {
		return nil
	}
	return fmt.Errorf("%q: want an https URL", s)
}

// issuers converts the issuers to authn's form.
func (af *authFile) issuers() []authn.Issuer {
	var out []authn.Issuer
	for _, is := range af.Issuers {
		out = append(out, authn.Issuer{
			Issuer:   is.Issuer,
			Audience: is.Audience,
			JWKSFile: is.JWKSFile,
			JWKSURL:  is.JWKSURL,
			Leeway:   is.leeway,
		})
	}
	return out
}

// describeMethods returns the configured methods for a log line.
func (s *security) describeMethods() string {
	if len(s.methods) == 0 {
		return "none (dev mode)"
	}
	return strings.Join(s.methods, ",")
}
