package policy

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Identity schemes. Every identity pattern starts with one of these, as
// every identity the server authenticates does.
const (
	SchemeSPIFFE = "spiffe://" // mTLS client certificate with a SPIFFE ID
	SchemeCN     = "cn:"       // mTLS client certificate without one: "cn:<CN>"
	SchemeJWT    = "jwt:"      // bearer JWT: "jwt:<iss>#<sub>"
	SchemeToken  = "token:"    // static bearer token: "token:<name>"
)

// maxKeyName is the longest key name Sigil accepts.
const maxKeyName = 63

// errGlob is the cause of every bad-pattern error; it never leaves the
// package unwrapped.
var errGlob = errors.New("bad pattern")

// compileGlob turns a glob into an anchored regular expression. "*"
// matches any run of characters other than '/', "**" any run including
// '/', and "?" one character other than '/'. Every other character,
// including '[' and '\', is literal.
func compileGlob(src string) (*regexp.Regexp, error) {
	if src == "" {
		return nil, fmt.Errorf("%w: empty", errGlob)
	}
	if !utf8.ValidString(src) {
		return nil, fmt.Errorf("%w: not valid UTF-8", errGlob)
	}
	var b strings.Builder
	b.WriteString(`(?s)^`)
	for i := 0; i < len(src); {
		switch {
		case strings.HasPrefix(src[i:], "***"):
			return nil, fmt.Errorf("%w: %q: \"***\" is not a wildcard; use * or **", errGlob, src)
		case strings.HasPrefix(src[i:], "**"):
			b.WriteString(`.*`)
			i += 2
		case src[i] == '*':
			b.WriteString(`[^/]*`)
			i++
		case src[i] == '?':
			b.WriteString(`[^/]`)
			i++
		default:
			_, size := utf8.DecodeRuneInString(src[i:])
			b.WriteString(regexp.QuoteMeta(src[i : i+size]))
			i += size
		}
	}
	b.WriteString(`$`)
	return regexp.Compile(b.String())
}

// compileIdentity checks and compiles an identity pattern.
func compileIdentity(src string) (*regexp.Regexp, error) {
	for _, r := range src {
		if unicode.IsControl(r) {
			return nil, fmt.Errorf("%w: %q contains a control character", errGlob, src)
		}
	}
	scheme := ""
	for _, s := range []string{SchemeSPIFFE, SchemeCN, SchemeJWT, SchemeToken} {
		if strings.HasPrefix(src, s) {
			scheme = s
		}
	}
	if scheme == "" {
		return nil, fmt.Errorf("%w: %q does not start with %q, %q, %q or %q",
			errGlob, src, SchemeSPIFFE, SchemeCN, SchemeJWT, SchemeToken)
	}
	if len(src) == len(scheme) {
		return nil, fmt.Errorf("%w: %q has nothing after %q", errGlob, src, scheme)
	}
	return compileGlob(src)
}

// compileKey checks and compiles a key-name pattern. Key names use
// [a-zA-Z0-9_-], so a pattern with any other character, or "**" (key
// names have no '/'), is a mistake.
func compileKey(src string) (*regexp.Regexp, error) {
	for _, r := range src {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			r == '_' || r == '-' || r == '*' || r == '?') {
			return nil, fmt.Errorf("%w: %q: character %q cannot be in a key name (names use [a-zA-Z0-9_-]; wildcards * and ?)",
				errGlob, src, r)
		}
	}
	if strings.Contains(src, "**") {
		return nil, fmt.Errorf("%w: %q: use * in key patterns; key names have no '/' for ** to cross", errGlob, src)
	}
	if !strings.ContainsAny(src, "*?") && len(src) > maxKeyName {
		return nil, fmt.Errorf("%w: %q is longer than a key name can be (%d)", errGlob, src, maxKeyName)
	}
	return compileGlob(src)
}

// anyMatch reports whether s matches one of the patterns.
func anyMatch(patterns []*regexp.Regexp, s string) bool {
	for _, re := range patterns {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}
