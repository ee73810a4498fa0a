// Package policy decides which authenticated identity may call which RPC
// on which key, and which claims an identity may have Sigil sign with
// SignJWT.
//
// A policy is a YAML file of rules; see Parse for the format and
// testdata/sample.yaml for an example. Evaluation is default deny: a
// request is allowed when at least one rule matches its identity, its RPC
// and its key. There are no deny rules.
//
// A Policy is immutable once parsed and safe for concurrent use. A Holder
// is safe for concurrent use: Policy may be called from any number of
// goroutines while Reload replaces the policy. The package has no global
// mutable state and installs no signal handlers; the server calls Reload
// on SIGHUP.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
)

// ErrInvalid is wrapped by every error about a policy file that does not
// parse or does not validate; the error is a *ParseError.
var ErrInvalid = errors.New("policy: invalid policy")

// ErrDenied is returned by CheckJWT when no rule allows the identity to
// call SignJWT on the key.
var ErrDenied = errors.New("policy: permission denied")

// ErrClaimsRefused is wrapped by CheckJWT's errors for claims outside the
// identity's claim policy. The error text after the wrapped sentinel
// names the offending claim and is safe to return to the caller.
var ErrClaimsRefused = errors.New("claims refused")

// ParseError describes why a policy file was refused.
type ParseError struct {
	// File is the path given to Load, or "" for Parse.
	File string
	// Line is the 1-based line in the file, or 0 if unknown.
	Line int
	// Rule is the 0-based index of the rule in the rules list, or -1 if
	// the error is not about one rule.
	Rule int
	// Field is the offending field within the rule (or at the top level
	// if Rule is -1), such as "allow[1]" or "jwt.max_lifetime"; "" if the
	// error is about the whole rule or file.
	Field string
	// Reason says what is wrong.
	Reason string
}

// Error returns the location and the reason, such as
// "policy.yaml:14: rules[2].allow[1]: unknown RPC or group \"Encrpyt\"".
func (e *ParseError) Error() string {
	loc := "policy: "
	switch {
	case e.File != "" && e.Line > 0:
		loc = e.File + ":" + strconv.Itoa(e.Line) + ": "
	case e.File != "":
		loc = e.File + ": "
	case e.Line > 0:
		loc = "policy: line " + strconv.Itoa(e.Line) + ": "
	}
	where := e.Field
	if e.Rule >= 0 {
		where = "rules[" + strconv.Itoa(e.Rule) + "]"
		if e.Field != "" {
			where += "." + e.Field
		}
	}
	if where != "" {
		where += ": "
	}
	return loc + where + e.Reason
}

// Unwrap returns ErrInvalid.
func (e *ParseError) Unwrap() error { return ErrInvalid }

// Policy is a parsed policy file. The zero value and nil deny everything.
type Policy struct {
	rules  []rule
	digest string
}

// rule is one compiled rule.
type rule struct {
	identities []*regexp.Regexp
	keys       []*regexp.Regexp
	rpcs       rpcSet
	// jwt is the SignJWT claim policy; set (to the default if the file
	// has none) exactly when rpcs includes SignJWT.
	jwt *claimPolicy
}

// Load reads and parses the policy file at path. A *ParseError from it
// names the file.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := parse(b)
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			pe.File = path
		}
		return nil, err
	}
	return p, nil
}

// Allow reports whether identity may call rpc on the key named key. rpc
// is a short RPC name such as "Encrypt"; an unknown name is denied.
//
// ListKeys names no key: call it with key "", and it is allowed when a
// rule that grants ListKeys (by name, "read" or "*") matches identity,
// whatever that rule's keys. Every other RPC is denied for key "".
//
// ReEncrypt involves two keys: the server calls Allow(identity,
// "ReEncrypt", source) and Allow(identity, "ReEncrypt", destination), and
// both must be true. Only the RPC name "ReEncrypt" and the groups "use"
// and "*" grant it; "encrypt" and "decrypt" do not.
func (p *Policy) Allow(identity, rpc, key string) bool {
	bit, ok := rpcBit(rpc)
	if !ok {
		return false
	}
	return p.match(identity, bit, key) != nil
}

// match returns the first rule that grants bit on key to identity, or
// nil.
func (p *Policy) match(identity string, bit rpcSet, key string) *rule {
	if p == nil || (key == "" && bit != bitListKeys) {
		return nil
	}
	for i := range p.rules {
		r := &p.rules[i]
		if r.rpcs&bit == 0 || !anyMatch(r.identities, identity) {
			continue
		}
		if key == "" || anyMatch(r.keys, key) {
			return r
		}
	}
	return nil
}

// Len returns the number of rules.
func (p *Policy) Len() int {
	if p == nil {
		return 0
	}
	return len(p.rules)
}

// Digest returns the hex SHA-256 of the policy file, for log lines that
// say which policy is in force.
func (p *Policy) Digest() string {
	if p == nil {
		return ""
	}
	return p.digest
}

// newDigest returns the hex SHA-256 of b.
func newDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
