package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// testNow is the fixed "now" of the claim tests.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// at returns testNow plus d as a JSON-decoded NumericDate.
func at(d time.Duration) float64 { return float64(testNow.Add(d).Unix()) }

const jwtPolicy = `
rules:
  - identities: ["token:strict"]
    keys: ["sess-*"]
    allow: ["SignJWT"]
    jwt:
      issuers: ["https://auth.example", "https://auth2.example"]
      audiences: ["api", "admin"]
      max_lifetime: 15m
  - identities: ["token:strict", "token:loose"]
    keys: ["*"]
    allow: ["use"]
  - identities: ["token:loose"]
    keys: ["*"]
    allow: ["SignJWT"]
    jwt: {}
  - identities: ["token:signer"]
    keys: ["*"]
    allow: ["Sign"]
`

func TestCheckJWT(t *testing.T) {
	p := mustParse(t, jwtPolicy)
	good := func() map[string]any {
		return map[string]any{"iss": "https://auth.example", "aud": "api", "sub": "u", "iat": at(0), "exp": at(10 * time.Minute)}
	}
	with := func(k string, v any) map[string]any {
		c := good()
		c[k] = v
		return c
	}
	without := func(k string) map[string]any {
		c := good()
		delete(c, k)
		return c
	}
	tests := []struct {
		name    string
		id, key string
		claims  map[string]any
		denied  bool
		refusal string // "" for accepted
	}{
		{"good", "token:strict", "sess-1", good(), false, ""},
		{"second issuer", "token:strict", "sess-1", with("iss", "https://auth2.example"), false, ""},
		{"aud array", "token:strict", "sess-1", with("aud", []any{"api", "admin"}), false, ""},
		{"aud []string", "token:strict", "sess-1", with("aud", []string{"admin"}), false, ""},
		{"no iat uses now", "token:strict", "sess-1", without("iat"), false, ""},
		{"exact max lifetime", "token:strict", "sess-1", with("exp", at(15*time.Minute)), false, ""},
		{"iat within skew", "token:strict", "sess-1", with("iat", at(30*time.Second)), false, ""},
		{"nbf before exp", "token:strict", "sess-1", with("nbf", at(time.Minute)), false, ""},
		{"json.Number", "token:strict", "sess-1", with("exp", json.Number("1772367000")), false, ""},
		{"int64", "token:strict", "sess-1", with("exp", testNow.Add(time.Minute).Unix()), false, ""},
		{"fractional exp", "token:strict", "sess-1", with("exp", at(time.Minute)+0.5), false, ""},

		{"iss missing", "token:strict", "sess-1", without("iss"), false, "iss is required"},
		{"iss wrong", "token:strict", "sess-1", with("iss", "https://evil.example"), false, `iss "https://evil.example" is not allowed`},
		{"iss not a string", "token:strict", "sess-1", with("iss", 7.0), false, "iss must be a string"},
		{"aud missing", "token:strict", "sess-1", without("aud"), false, "aud is required"},
		{"aud string wrong", "token:strict", "sess-1", with("aud", "x"), false, `aud "x" is not allowed`},
		{"aud array one wrong", "token:strict", "sess-1", with("aud", []any{"api", "x"}), false, `aud "x" is not allowed`},
		{"aud array empty", "token:strict", "sess-1", with("aud", []any{}), false, "aud must not be empty"},
		{"aud array non-string", "token:strict", "sess-1", with("aud", []any{"api", 1.0}), false, "aud must be a string or a list"},
		{"aud object", "token:strict", "sess-1", with("aud", map[string]any{"a": "api"}), false, "aud must be a string or a list"},
		{"exp missing", "token:strict", "sess-1", without("exp"), false, "exp is required"},
		{"exp string", "token:strict", "sess-1", with("exp", "tomorrow"), false, "exp must be a number"},
		{"exp bad json.Number", "token:strict", "sess-1", with("exp", json.Number("x")), false, "exp must be a number"},
		{"exp negative", "token:strict", "sess-1", with("exp", -1.0), false, "exp is out of range"},
		{"exp huge", "token:strict", "sess-1", with("exp", 1e300), false, "exp is out of range"},
		{"lifetime too long", "token:strict", "sess-1", with("exp", at(16*time.Minute)), false, "exceeds the maximum of 15m0s"},
		{"backdated iat", "token:strict", "sess-1", func() map[string]any {
			c := with("iat", at(-50*time.Minute))
			c["exp"] = at(10 * time.Minute)
			return c
		}(), false, "exceeds the maximum of 15m0s"},
		{"no iat, exp too far", "token:strict", "sess-1", func() map[string]any {
			c := without("iat")
			c["exp"] = at(time.Hour)
			return c
		}(), false, "exceeds the maximum of 15m0s"},
		{"future iat within skew, exp too far from now", "token:strict", "sess-1", func() map[string]any {
			c := with("iat", at(time.Minute))
			c["exp"] = at(15*time.Minute + 30*time.Second)
			return c
		}(), false, "exp is more than 15m0s from now"},
		{"already expired within lifetime", "token:strict", "sess-1", func() map[string]any {
			c := with("iat", at(-time.Hour))
			c["exp"] = at(-time.Hour + 10*time.Minute)
			return c
		}(), false, ""},
		{"iat future", "token:strict", "sess-1", func() map[string]any {
			c := with("iat", at(2*time.Minute))
			c["exp"] = at(5 * time.Minute)
			return c
		}(), false, "iat is in the future"},
		{"iat not a number", "token:strict", "sess-1", with("iat", true), false, "iat must be a number"},
		{"exp before iat", "token:strict", "sess-1", with("exp", at(-time.Second)), false, "exp must be after iat"},
		{"nbf after exp", "token:strict", "sess-1", with("nbf", at(11*time.Minute)), false, "nbf is after exp"},
		{"nbf not a number", "token:strict", "sess-1", with("nbf", "soon"), false, "nbf must be a number"},

		// token:strict on another key is allowed SignJWT by the second rule
		// ("use"), which has no jwt block: refused. token:loose has an
		// empty block: any iss and aud, default lifetime.
		{"no claim policy", "token:strict", "other", good(), false, "no claim policy"},
		{"empty claim policy any iss", "token:loose", "other", with("iss", "https://evil.example"), false, ""},
		{"default policy lifetime", "token:loose", "k", with("exp", at(DefaultMaxLifetime)), false, ""},
		{"default policy too long", "token:loose", "k", with("exp", at(DefaultMaxLifetime+time.Second)), false, "exceeds the maximum of 1h0m0s"},
		{"default policy exp required", "token:loose", "k", without("exp"), false, "exp is required"},

		{"no rule", "token:nobody", "sess-1", good(), true, ""},
		{"Sign is not SignJWT", "token:signer", "sess-1", good(), true, ""},
		{"empty key", "token:strict", "", good(), true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.CheckJWT(tt.id, tt.key, tt.claims, testNow)
			switch {
			case tt.denied:
				if !errors.Is(err, ErrDenied) {
					t.Errorf("CheckJWT = %v, want ErrDenied", err)
				}
			case tt.refusal == "":
				if err != nil {
					t.Errorf("CheckJWT = %v, want nil", err)
				}
			default:
				if !errors.Is(err, ErrClaimsRefused) || errors.Is(err, ErrDenied) {
					t.Fatalf("CheckJWT = %v, want ErrClaimsRefused", err)
				}
				if !strings.Contains(err.Error(), tt.refusal) {
					t.Errorf("CheckJWT = %q, want it to mention %q", err, tt.refusal)
				}
			}
		})
	}
}

func TestCheckJWTFirstRuleWins(t *testing.T) {
	p := mustParse(t, `
rules:
  - identities: ["token:a"]
    keys: ["k"]
    allow: ["SignJWT"]
    jwt: {audiences: ["one"]}
  - identities: ["token:a"]
    keys: ["k"]
    allow: ["SignJWT"]
    jwt: {audiences: ["two"]}
`)
	claims := func(aud string) map[string]any { return map[string]any{"aud": aud, "exp": at(time.Minute)} }
	if err := p.CheckJWT("token:a", "k", claims("one"), testNow); err != nil {
		t.Errorf("first rule's audience refused: %v", err)
	}
	if err := p.CheckJWT("token:a", "k", claims("two"), testNow); !errors.Is(err, ErrClaimsRefused) {
		t.Errorf("second rule's audience = %v, want ErrClaimsRefused", err)
	}
}

func TestClaimMessagesAreClipped(t *testing.T) {
	p := mustParse(t, jwtPolicy)
	long := strings.Repeat("a", 1000)
	err := p.CheckJWT("token:strict", "sess-1", map[string]any{"iss": long, "exp": at(time.Minute)}, testNow)
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("CheckJWT = %v, want a short refusal", err)
	}
}

func TestNumericDateTypes(t *testing.T) {
	exp := testNow.Add(time.Minute).Unix()
	for _, v := range []any{float64(exp), float32(exp), int(exp), int32(exp), int64(exp), uint(exp), uint32(exp), uint64(exp), json.Number("1772366460")} {
		got, ok, err := numericDate(map[string]any{"exp": v}, "exp")
		if err != nil || !ok || got < float64(exp)-128 || got > float64(exp)+128 {
			t.Errorf("numericDate(%T %v) = %v, %v, %v", v, v, got, ok, err)
		}
	}
}

func TestDefaultPolicyAnyAudience(t *testing.T) {
	p := mustParse(t, jwtPolicy)
	for _, aud := range []any{"x", []any{"x", "y"}, []any{}} {
		claims := map[string]any{"aud": aud, "exp": at(time.Minute)}
		if err := p.CheckJWT("token:loose", "k", claims, testNow); err != nil {
			t.Errorf("aud %v under the default policy: %v", aud, err)
		}
	}
}
