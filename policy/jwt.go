package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"
)

// DefaultMaxLifetime is the longest token lifetime (exp - iat) SignJWT
// accepts under a claim policy that sets no max_lifetime.
const DefaultMaxLifetime = time.Hour

// ClockSkew is how far in the future an iat claim may be.
const ClockSkew = time.Minute

// maxNumericDate bounds NumericDate claims: the start of the year 10000.
const maxNumericDate = 253402300800

// claimPolicy restricts the claims an identity may have signed.
type claimPolicy struct {
	issuers     []string // nil: any
	audiences   []string // nil: any
	maxLifetime time.Duration
}

// CheckJWT checks the claims that identity asks SignJWT to sign with key
// against the claim policy of the first rule, in file order, that allows
// identity to call SignJWT on key and has a jwt block. Put narrow rules
// before broad ones. If no such rule has a jwt block, SignJWT is refused:
// a signing client never mints tokens that no claim policy describes.
//
// It returns an error wrapping ErrDenied if no rule allows the call, and
// one wrapping ErrClaimsRefused, with a message safe to return to the
// caller, if:
//   - issuers are set and iss is missing, not a string or not one of them;
//   - audiences are set and aud is missing, empty, not a string or list of
//     strings, or has a value that is not one of them;
//   - exp is missing; exp, iat or nbf is not a NumericDate;
//   - iat is more than ClockSkew after now;
//   - exp is not after iat, or nbf is after exp;
//   - exp - iat, or exp - now, exceeds the maximum lifetime.
//
// iat defaults to now when absent. Numbers may be float64 (as
// encoding/json decodes them), json.Number or any Go integer type.
func (p *Policy) CheckJWT(identity, key string, claims map[string]any, now time.Time) error {
	if p.match(identity, bitSignJWT, key) == nil {
		return fmt.Errorf("%w: %s may not call SignJWT on key %q", ErrDenied, identity, key)
	}
	for i := range p.rules {
		r := &p.rules[i]
		if r.jwt != nil && r.rpcs&bitSignJWT != 0 && anyMatch(r.identities, identity) && anyMatch(r.keys, key) {
			return r.jwt.check(claims, now)
		}
	}
	// A signing client never mints tokens no claim policy describes.
	return fmt.Errorf("%w: no claim policy (a jwt block) covers SignJWT for this identity and key", ErrClaimsRefused)
}

// check applies the claim policy.
func (cp *claimPolicy) check(claims map[string]any, now time.Time) error {
	if err := cp.checkIssuer(claims); err != nil {
		return err
	}
	if err := cp.checkAudience(claims); err != nil {
		return err
	}
	return cp.checkTimes(claims, now)
}

// checkIssuer checks iss.
func (cp *claimPolicy) checkIssuer(claims map[string]any) error {
	v, ok := claims["iss"]
	if !ok {
		if cp.issuers != nil {
			return refused("iss is required")
		}
		return nil
	}
	iss, isString := v.(string)
	if !isString {
		return refused("iss must be a string")
	}
	if cp.issuers != nil && !slices.Contains(cp.issuers, iss) {
		return refused("iss %q is not allowed", clip(iss))
	}
	return nil
}

// checkAudience checks aud.
func (cp *claimPolicy) checkAudience(claims map[string]any) error {
	v, ok := claims["aud"]
	if !ok {
		if cp.audiences != nil {
			return refused("aud is required")
		}
		return nil
	}
	var auds []string
	switch a := v.(type) {
	case string:
		auds = []string{a}
	case []string:
		auds = a
	case []any:
		for _, e := range a {
			s, isString := e.(string)
			if !isString {
				return refused("aud must be a string or a list of strings")
			}
			auds = append(auds, s)
		}
	default:
		return refused("aud must be a string or a list of strings")
	}
	if cp.audiences == nil {
		return nil
	}
	if len(auds) == 0 {
		return refused("aud must not be empty")
	}
	for _, a := range auds {
		if !slices.Contains(cp.audiences, a) {
			return refused("aud %q is not allowed", clip(a))
		}
	}
	return nil
}

// checkTimes checks exp, iat and nbf. Times are compared in seconds since
// the epoch, as float64: exact for integers, and finer than a
// microsecond for current dates.
func (cp *claimPolicy) checkTimes(claims map[string]any, now time.Time) error {
	nowS := float64(now.UnixNano()) / 1e9
	exp, hasExp, err := numericDate(claims, "exp")
	if err != nil {
		return err
	}
	if !hasExp {
		return refused("exp is required")
	}
	iat, hasIat, err := numericDate(claims, "iat")
	if err != nil {
		return err
	}
	if !hasIat {
		iat = nowS
	}
	nbf, hasNbf, err := numericDate(claims, "nbf")
	if err != nil {
		return err
	}
	maxS := cp.maxLifetime.Seconds()
	switch {
	case iat > nowS+ClockSkew.Seconds():
		return refused("iat is in the future")
	case exp <= iat:
		return refused("exp must be after iat")
	case hasNbf && nbf > exp:
		return refused("nbf is after exp")
	case exp-iat > maxS:
		return refused("token lifetime (exp - iat) exceeds the maximum of %s", cp.maxLifetime)
	case exp-nowS > maxS:
		return refused("exp is more than %s from now", cp.maxLifetime)
	}
	return nil
}

// numericDate returns the NumericDate claim name in seconds, and whether
// it is present.
func numericDate(claims map[string]any, name string) (float64, bool, error) {
	v, ok := claims[name]
	if !ok {
		return 0, false, nil
	}
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case float32:
		f = float64(x)
	case json.Number:
		var err error
		if f, err = x.Float64(); err != nil {
			return 0, true, refused("%s must be a number of seconds", name)
		}
	case int:
		f = float64(x)
	case int32:
		f = float64(x)
	case int64:
		f = float64(x)
	case uint:
		f = float64(x)
	case uint32:
		f = float64(x)
	case uint64:
		f = float64(x)
	default:
		return 0, true, refused("%s must be a number of seconds", name)
	}
	if math.IsNaN(f) || f < 0 || f >= maxNumericDate {
		return 0, true, refused("%s is out of range", name)
	}
	return f, true, nil
}

// refused returns an error wrapping ErrClaimsRefused.
func refused(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrClaimsRefused}, args...)...)
}

// clip shortens a caller's string for an error message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	r := []rune(s)
	if len(r) <= max {
		return s
	}
	return string(r[:max]) + "…"
}
