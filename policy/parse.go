package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Parse parses and validates a policy file:
//
//	rules:
//	  - identities: ["spiffe://prod.example/ns/payments/**", "token:billing-*"]
//	    keys: ["payments-*"]
//	    allow: ["encrypt", "decrypt", "GetKey"]
//	  - identities: ["jwt:https://k8s.example#system:serviceaccount:auth:issuer"]
//	    keys: ["auth-signing"]
//	    allow: ["SignJWT", "verify"]
//	    jwt:                     # optional; only on rules that grant SignJWT
//	      issuers: ["https://auth.example"]
//	      audiences: ["api"]
//	      max_lifetime: 15m
//
// The top level has only "rules", a list (possibly empty, which denies
// everything). Each rule needs non-empty "identities", "keys" and "allow"
// lists and may have "jwt".
//
// identities are patterns of authenticated identities: a SPIFFE ID
// ("spiffe://…") or "cn:<CN>" for mTLS, "jwt:<iss>#<sub>" for a bearer
// JWT, "token:<name>" for a static token. Each must start with one of
// those schemes. keys are patterns of key names. In both, "*" matches any
// run of characters except '/', "**" any run including '/' (so
// "spiffe://prod/ns/payments/**" matches every ID under that path), and
// "?" one character except '/'; everything else, including '[', is
// literal and matching is case-sensitive. Key patterns may only use the
// key-name characters [a-zA-Z0-9_-] and the wildcards * and ?.
//
// allow lists RPC names (the short method names of
// sigil.v1.KeyManagementService, such as "Encrypt") and groups:
//
//	admin    CreateKey UpdateKey RotateKey EnableKeyVersion DisableKeyVersion
//	         ScheduleKeyVersionDestruction RestoreKeyVersion
//	use      Encrypt Decrypt ReEncrypt GenerateDataKey Sign Verify SignJWT
//	read     GetKey ListKeys ListKeyVersions GetPublicKey
//	encrypt  Encrypt GenerateDataKey
//	decrypt  Decrypt
//	sign     Sign SignJWT
//	verify   Verify GetPublicKey
//	*        use and read: every RPC except the admin ones
//
// Admin RPCs are granted only by naming them or "admin"; "*" never grants
// them.
//
// jwt is the claim policy CheckJWT applies to SignJWT: issuers and
// audiences (non-empty lists when present; absent means any) and
// max_lifetime (a Go duration such as "15m", positive; default
// DefaultMaxLifetime). SignJWT is allowed only under a rule that has a
// jwt block (see CheckJWT); an empty block "jwt: {}" allows any iss and
// aud with exp required and a lifetime of at most DefaultMaxLifetime.
//
// Unknown fields, duplicate fields, unknown RPC or group names, bad
// patterns, empty lists and bad durations are errors; the *ParseError
// names the line, the rule index and the field.
func Parse(b []byte) (*Policy, error) {
	return parse(b)
}

// parse implements Parse.
func parse(b []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ParseError{Rule: -1, Reason: "the policy is empty; it needs a rules list"}
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &ParseError{Line: extra.Line, Rule: -1, Reason: "more than one YAML document"}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	root = deref(root)
	if root.Kind != yaml.MappingNode {
		return nil, &ParseError{Line: root.Line, Rule: -1, Reason: "the top level must be a mapping with a rules list"}
	}
	top, err := fields(root, -1, "", "rules")
	if err != nil {
		return nil, err
	}
	rulesNode, ok := top["rules"]
	if !ok {
		return nil, &ParseError{Line: root.Line, Rule: -1, Field: "rules", Reason: "is required"}
	}
	if rulesNode.Kind != yaml.SequenceNode {
		return nil, &ParseError{Line: rulesNode.Line, Rule: -1, Field: "rules", Reason: "must be a list of rules"}
	}
	p := &Policy{digest: newDigest(b), rules: make([]rule, 0, len(rulesNode.Content))}
	for i, n := range rulesNode.Content {
		r, err := parseRule(deref(n), i)
		if err != nil {
			return nil, err
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

// parseRule parses and compiles rule i.
func parseRule(n *yaml.Node, i int) (rule, error) {
	var r rule
	if n.Kind != yaml.MappingNode {
		return r, &ParseError{Line: n.Line, Rule: i, Reason: "must be a mapping with identities, keys and allow"}
	}
	f, err := fields(n, i, "", "identities", "keys", "allow", "jwt")
	if err != nil {
		return r, err
	}
	for _, name := range []string{"identities", "keys", "allow"} {
		if _, ok := f[name]; !ok {
			return r, &ParseError{Line: n.Line, Rule: i, Field: name, Reason: "is required"}
		}
	}
	if r.identities, err = patterns(f["identities"], i, "identities", compileIdentity); err != nil {
		return r, err
	}
	if r.keys, err = patterns(f["keys"], i, "keys", compileKey); err != nil {
		return r, err
	}
	allow, nodes, err := stringList(f["allow"], i, "allow")
	if err != nil {
		return r, err
	}
	for j, a := range allow {
		s, ok := resolveAllow(a)
		if !ok {
			reason := fmt.Sprintf("unknown RPC or group %q", a)
			if s := suggestAllow(a); s != "" {
				reason += fmt.Sprintf(" (did you mean %q? names are case-sensitive)", s)
			}
			return r, &ParseError{Line: nodes[j].Line, Rule: i, Field: fmt.Sprintf("allow[%d]", j), Reason: reason}
		}
		r.rpcs |= s
	}
	if jn, ok := f["jwt"]; ok {
		if r.rpcs&bitSignJWT == 0 {
			return r, &ParseError{Line: jn.Line, Rule: i, Field: "jwt", Reason: "is set but allow does not grant SignJWT"}
		}
		if r.jwt, err = parseClaimPolicy(jn, i); err != nil {
			return r, err
		}
	}
	return r, nil
}

// parseClaimPolicy parses the jwt block of rule i.
func parseClaimPolicy(n *yaml.Node, i int) (*claimPolicy, error) {
	if n.Kind != yaml.MappingNode {
		return nil, &ParseError{Line: n.Line, Rule: i, Field: "jwt", Reason: "must be a mapping with issuers, audiences and max_lifetime"}
	}
	f, err := fields(n, i, "jwt.", "issuers", "audiences", "max_lifetime")
	if err != nil {
		return nil, err
	}
	cp := &claimPolicy{maxLifetime: DefaultMaxLifetime}
	if v, ok := f["issuers"]; ok {
		if cp.issuers, _, err = stringList(v, i, "jwt.issuers"); err != nil {
			return nil, err
		}
	}
	if v, ok := f["audiences"]; ok {
		if cp.audiences, _, err = stringList(v, i, "jwt.audiences"); err != nil {
			return nil, err
		}
	}
	if v, ok := f["max_lifetime"]; ok {
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return nil, &ParseError{Line: v.Line, Rule: i, Field: "jwt.max_lifetime", Reason: "must be a duration such as 15m"}
		}
		d, err := time.ParseDuration(v.Value)
		if err != nil {
			return nil, &ParseError{Line: v.Line, Rule: i, Field: "jwt.max_lifetime",
				Reason: fmt.Sprintf("%q is not a duration (use a Go duration such as 15m or 1h)", v.Value)}
		}
		if d <= 0 {
			return nil, &ParseError{Line: v.Line, Rule: i, Field: "jwt.max_lifetime", Reason: fmt.Sprintf("must be positive, not %s", v.Value)}
		}
		cp.maxLifetime = d
	}
	return cp, nil
}

// fields returns the values of mapping n by key, refusing keys not in
// allowed and duplicate keys. prefix is prepended to field names in
// errors.
func fields(n *yaml.Node, i int, prefix string, allowed ...string) (map[string]*yaml.Node, error) {
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for k := 0; k+1 < len(n.Content); k += 2 {
		key, val := deref(n.Content[k]), deref(n.Content[k+1])
		if key.Kind != yaml.ScalarNode {
			return nil, &ParseError{Line: key.Line, Rule: i, Field: strings.TrimSuffix(prefix, "."), Reason: "field names must be plain strings"}
		}
		known := false
		for _, a := range allowed {
			known = known || a == key.Value
		}
		if !known {
			return nil, &ParseError{Line: key.Line, Rule: i, Field: prefix + key.Value,
				Reason: fmt.Sprintf("unknown field (known fields: %s)", strings.Join(allowed, ", "))}
		}
		if _, dup := out[key.Value]; dup {
			return nil, &ParseError{Line: key.Line, Rule: i, Field: prefix + key.Value, Reason: "appears twice"}
		}
		out[key.Value] = val
	}
	return out, nil
}

// stringList returns the non-empty strings of the non-empty sequence n,
// with their nodes for error lines.
func stringList(n *yaml.Node, i int, field string) ([]string, []*yaml.Node, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, nil, &ParseError{Line: n.Line, Rule: i, Field: field, Reason: "must be a list of strings"}
	}
	if len(n.Content) == 0 {
		return nil, nil, &ParseError{Line: n.Line, Rule: i, Field: field, Reason: "must not be empty"}
	}
	out := make([]string, 0, len(n.Content))
	nodes := make([]*yaml.Node, 0, len(n.Content))
	for j, e := range n.Content {
		e = deref(e)
		if e.Kind != yaml.ScalarNode || e.Tag == "!!null" || e.Value == "" {
			return nil, nil, &ParseError{Line: e.Line, Rule: i, Field: fmt.Sprintf("%s[%d]", field, j), Reason: "must be a non-empty string"}
		}
		out = append(out, e.Value)
		nodes = append(nodes, e)
	}
	return out, nodes, nil
}

// patterns compiles the list n of rule i with compile.
func patterns(n *yaml.Node, i int, field string, compile func(string) (*regexp.Regexp, error)) ([]*regexp.Regexp, error) {
	srcs, nodes, err := stringList(n, i, field)
	if err != nil {
		return nil, err
	}
	out := make([]*regexp.Regexp, 0, len(srcs))
	for j, s := range srcs {
		re, err := compile(s)
		if err != nil {
			return nil, &ParseError{Line: nodes[j].Line, Rule: i, Field: fmt.Sprintf("%s[%d]", field, j), Reason: err.Error()}
		}
		out = append(out, re)
	}
	return out, nil
}

// deref follows YAML aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// yamlError turns a YAML syntax error into a *ParseError.
func yamlError(err error) error {
	return &ParseError{Rule: -1, Reason: strings.TrimPrefix(err.Error(), "yaml: ")}
}
