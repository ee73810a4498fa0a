package policy

import "testing"

func TestIdentityGlobs(t *testing.T) {
	tests := []struct {
		pattern, id string
		want        bool
	}{
		{"spiffe://prod/ns/a/sa/api", "spiffe://prod/ns/a/sa/api", true},
		{"spiffe://prod/ns/a/sa/api", "spiffe://prod/ns/a/sa/api2", false},
		{"spiffe://prod/ns/a/sa/api", "SPIFFE://prod/ns/a/sa/api", false},
		{"spiffe://prod/ns/a/sa/*", "spiffe://prod/ns/a/sa/api", true},
		{"spiffe://prod/ns/a/sa/*", "spiffe://prod/ns/a/sa/api/extra", false},
		{"spiffe://prod/ns/*/sa/api", "spiffe://prod/ns/b/sa/api", true},
		{"spiffe://prod/ns/*/sa/api", "spiffe://prod/ns/b/c/sa/api", false},
		{"spiffe://prod/ns/a/**", "spiffe://prod/ns/a/sa/api", true},
		{"spiffe://prod/ns/a/**", "spiffe://prod/ns/a/", true},
		{"spiffe://prod/ns/a/**", "spiffe://prod/ns/a", false},
		{"spiffe://prod/ns/a/**", "spiffe://prod/ns/ab/sa/api", false},
		{"spiffe://prod/**/sa/api", "spiffe://prod/ns/a/sa/api", true},
		{"spiffe://prod/ns/?/sa/api", "spiffe://prod/ns/a/sa/api", true},
		{"spiffe://prod/ns/?/sa/api", "spiffe://prod/ns/ab/sa/api", false},
		{"spiffe://prod/ns/?/sa/api", "spiffe://prod/ns///sa/api", false},
		{"token:billing-*", "token:billing-batch", true},
		{"token:billing-*", "token:billing-", true},
		{"token:billing-*", "token:billing", false},
		{"token:*", "cn:x", false},
		{"cn:Sigil Operator", "cn:Sigil Operator", true},
		{"cn:[abc]", "cn:[abc]", true},
		{"cn:[abc]", "cn:a", false},
		{"cn:a.b", "cn:aXb", false},
		{"cn:a+", "cn:aa", false},
		{"jwt:https://k8s.example#system:serviceaccount:payments:*", "jwt:https://k8s.example#system:serviceaccount:payments:api", true},
		{"jwt:https://k8s.example#system:serviceaccount:payments:*", "jwt:https://evil.example#system:serviceaccount:payments:api", false},
		{"jwt:https://k8s.example#**", "jwt:https://k8s.example#a/b", true},
		{"jwt:https://k8s.example#*", "jwt:https://k8s.example#a/b", false},
		{"jwt:**", "jwt:https://any.example#sub", true},
		{"token:é?", "token:éü", true},
	}
	for _, tt := range tests {
		re, err := compileIdentity(tt.pattern)
		if err != nil {
			t.Errorf("compileIdentity(%q): %v", tt.pattern, err)
			continue
		}
		if got := re.MatchString(tt.id); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.id, got, tt.want)
		}
	}
}

func TestKeyGlobs(t *testing.T) {
	tests := []struct {
		pattern, key string
		want         bool
	}{
		{"payments", "payments", true},
		{"payments", "payments-1", false},
		{"payments-*", "payments-1", true},
		{"payments-*", "payments-", true},
		{"payments-*", "payments", false},
		{"payments-*", "xpayments-1", false},
		{"*", "anything_at-all", true},
		{"*-signing", "session-signing", true},
		{"k?", "k1", true},
		{"k?", "k12", false},
		{"Payments", "payments", false},
	}
	for _, tt := range tests {
		re, err := compileKey(tt.pattern)
		if err != nil {
			t.Errorf("compileKey(%q): %v", tt.pattern, err)
			continue
		}
		if got := re.MatchString(tt.key); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.key, got, tt.want)
		}
	}
}

func TestBadGlobs(t *testing.T) {
	identities := []string{
		"", "**", "*", "payments", "spiffe:/x", "SPIFFE://x", "token:", "spiffe://", "cn:a\nb",
		"token:a***", "spiffe://prod/***",
	}
	for _, p := range identities {
		if _, err := compileIdentity(p); err == nil {
			t.Errorf("compileIdentity(%q) succeeded", p)
		}
	}
	keys := []string{
		"", "a/b", "a.b", "a b", "**", "a-**", "[ab]", "é",
		"k123456789012345678901234567890123456789012345678901234567890123",
	}
	for _, p := range keys {
		if _, err := compileKey(p); err == nil {
			t.Errorf("compileKey(%q) succeeded", p)
		}
	}
	// 63 characters is the longest key name, and a long pattern with a
	// wildcard is fine.
	for _, p := range []string{
		"k12345678901234567890123456789012345678901234567890123456789012",
		"k123456789012345678901234567890123456789012345678901234567890123*",
	} {
		if _, err := compileKey(p); err != nil {
			t.Errorf("compileKey(%q): %v", p, err)
		}
	}
}
