package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		// line, rule and field are the expected location; text must
		// appear in the message.
		line  int
		rule  int
		field string
		text  string
	}{
		{"empty file", "", 0, -1, "", "empty"},
		{"only comments", "# nothing\n", 0, -1, "", "empty"},
		{"syntax", "rules: [\n", 0, -1, "", "line"},
		{"tabs", "rules:\n\t- x\n", 0, -1, "", "line 2"},
		{"two documents", "rules: []\n---\nrules: []\n", 2, -1, "", "more than one"},
		{"top level list", "- a\n", 1, -1, "", "top level"},
		{"top level scalar", "hello\n", 1, -1, "", "top level"},
		{"unknown top field", "rules: []\nrulez: []\n", 2, -1, "rulez", "unknown field"},
		{"missing rules", "version: 1\n", 1, -1, "version", "unknown field"},
		{"rules not a list", "rules: {}\n", 1, -1, "rules", "list of rules"},
		{"rules null", "rules:\n", 1, -1, "rules", "list of rules"},
		{"duplicate top field", "rules: []\nrules: []\n", 2, -1, "rules", "appears twice"},
		{"rule not a mapping", "rules:\n  - hello\n", 2, 0, "", "must be a mapping"},
		{"unknown rule field", `rules:
  - identities: ["token:a"]
    keys: ["k"]
    allow: ["Encrypt"]
    alow: ["Decrypt"]
`, 5, 0, "alow", "unknown field"},
		{"missing identities", "rules:\n  - keys: [k]\n    allow: [Encrypt]\n", 2, 0, "identities", "is required"},
		{"missing keys", "rules:\n  - identities: [\"token:a\"]\n    allow: [Encrypt]\n", 2, 0, "keys", "is required"},
		{"missing allow", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n", 2, 0, "allow", "is required"},
		{"empty identities", "rules:\n  - identities: []\n    keys: [k]\n    allow: [Encrypt]\n", 2, 0, "identities", "must not be empty"},
		{"empty keys", "rules:\n  - identities: [\"token:a\"]\n    keys: []\n    allow: [Encrypt]\n", 3, 0, "keys", "must not be empty"},
		{"empty allow", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: []\n", 4, 0, "allow", "must not be empty"},
		{"null allow", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow:\n", 4, 0, "allow", "list of strings"},
		{"scalar keys", "rules:\n  - identities: [\"token:a\"]\n    keys: k\n    allow: [Encrypt]\n", 3, 0, "keys", "list of strings"},
		{"empty string entry", "rules:\n  - identities: [\"\"]\n    keys: [k]\n    allow: [Encrypt]\n", 2, 0, "identities[0]", "non-empty string"},
		{"null entry", "rules:\n  - identities: [\"token:a\"]\n    keys: [k, ~]\n    allow: [Encrypt]\n", 3, 0, "keys[1]", "non-empty string"},
		{"nested list entry", "rules:\n  - identities: [[\"token:a\"]]\n    keys: [k]\n    allow: [Encrypt]\n", 2, 0, "identities[0]", "non-empty string"},
		{"duplicate rule field", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    keys: [j]\n    allow: [Encrypt]\n", 4, 0, "keys", "appears twice"},
		{"unknown rpc", `rules:
  - identities: ["token:a"]
    keys: ["k"]
    allow:
      - Encrypt
      - Encrpyt
`, 6, 0, "allow[1]", `unknown RPC or group "Encrpyt"`},
		{"wrong case rpc", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [decrypt, encrypt, signjwt]\n", 4, 0, "allow[2]", `did you mean "SignJWT"`},
		{"wrong case group", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [Admin]\n", 4, 0, "allow[0]", `did you mean "admin"`},
		{"unknown group", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [all]\n", 4, 0, "allow[0]", "unknown RPC or group"},
		{"bad identity scheme", "rules:\n  - identities: [\"token:a\", \"payments-api\"]\n    keys: [k]\n    allow: [Encrypt]\n", 2, 0, "identities[1]", "does not start with"},
		{"bad identity glob", "rules:\n  - identities: [\"spiffe://prod/***\"]\n    keys: [k]\n    allow: [Encrypt]\n", 2, 0, "identities[0]", "***"},
		{"bad key glob", "rules:\n  - identities: [\"token:a\"]\n    keys: [\"payments/*\"]\n    allow: [Encrypt]\n", 3, 0, "keys[0]", "cannot be in a key name"},
		{"second rule", `rules:
  - identities: ["token:a"]
    keys: ["k"]
    allow: ["Encrypt"]
  - identities: ["token:b"]
    keys: ["k"]
    allow: ["Encrypt", "Bogus"]
`, 7, 1, "allow[1]", "Bogus"},
		{"jwt without SignJWT", `rules:
  - identities: ["token:a"]
    keys: ["k"]
    allow: ["Sign"]
    jwt: {max_lifetime: 5m}
`, 5, 0, "jwt", "does not grant SignJWT"},
		{"jwt not a mapping", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [SignJWT]\n    jwt: [a]\n", 5, 0, "jwt", "must be a mapping"},
		{"jwt unknown field", `rules:
  - identities: ["token:a"]
    keys: ["k"]
    allow: ["SignJWT"]
    jwt:
      issuer: ["x"]
`, 6, 0, "jwt.issuer", "unknown field"},
		{"jwt empty issuers", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [SignJWT]\n    jwt: {issuers: []}\n", 5, 0, "jwt.issuers", "must not be empty"},
		{"jwt scalar audiences", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [SignJWT]\n    jwt: {audiences: api}\n", 5, 0, "jwt.audiences", "list of strings"},
		{"negative lifetime", `rules:
  - identities: ["token:a"]
    keys: ["k"]
    allow: ["use"]
    jwt:
      max_lifetime: -5m
`, 6, 0, "jwt.max_lifetime", "must be positive"},
		{"zero lifetime", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [SignJWT]\n    jwt: {max_lifetime: 0s}\n", 5, 0, "jwt.max_lifetime", "must be positive"},
		{"lifetime without unit", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [SignJWT]\n    jwt: {max_lifetime: 900}\n", 5, 0, "jwt.max_lifetime", "not a duration"},
		{"lifetime null", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [SignJWT]\n    jwt: {max_lifetime: ~}\n", 5, 0, "jwt.max_lifetime", "must be a duration"},
		{"lifetime list", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [SignJWT]\n    jwt: {max_lifetime: [1m]}\n", 5, 0, "jwt.max_lifetime", "must be a duration"},
		{"non-string field name", "rules:\n  - ? [identities]\n    : [\"token:a\"]\n", 2, 0, "", "plain strings"},
		{"merge key", "base: &b {keys: [k]}\nrules: []\n", 1, -1, "base", "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded with %d rules", p.Len())
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ParseError", err)
			}
			if pe.Line != tt.line || pe.Rule != tt.rule || pe.Field != tt.field {
				t.Errorf("error %q at line %d rule %d field %q, want line %d rule %d field %q",
					err, pe.Line, pe.Rule, pe.Field, tt.line, tt.rule, tt.field)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not mention %q", err, tt.text)
			}
		})
	}
}

func TestParseErrorMessage(t *testing.T) {
	src := "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [Encrpyt]\n"
	_, err := Parse([]byte(src))
	const want = `policy: line 4: rules[0].allow[0]: unknown RPC or group "Encrpyt"`
	if err == nil || err.Error() != want {
		t.Errorf("Parse error = %v, want %s", err, want)
	}
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	want2 := path + `:4: rules[0].allow[0]: unknown RPC or group "Encrpyt"`
	if err == nil || err.Error() != want2 {
		t.Errorf("Load error = %v, want %s", err, want2)
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		src  string
	}{
		{"empty rules", "rules: []\n"},
		{"aliases", `rules:
  - identities: &ids ["token:a", "token:b"]
    keys: ["k"]
    allow: ["Encrypt"]
  - identities: *ids
    keys: ["j"]
    allow: ["Decrypt"]
`},
		{"flow and block styles", `rules:
  - {identities: ["cn:x"], keys: [k], allow: [read]}
  - identities:
      - cn:y
    keys:
      - k
    allow:
      - admin
`},
		{"empty jwt block", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [SignJWT]\n    jwt: {}\n"},
		{"jwt via group", "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [sign]\n    jwt: {issuers: [x], audiences: [y], max_lifetime: 90s}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.src)); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
}

func TestParseAliasesApply(t *testing.T) {
	p := mustParse(t, `rules:
  - identities: &ids ["token:a", "token:b"]
    keys: ["k"]
    allow: ["Encrypt"]
  - identities: *ids
    keys: ["j"]
    allow: ["Decrypt"]
`)
	if !p.Allow("token:b", "Decrypt", "j") {
		t.Error("aliased identities are not applied")
	}
}
