package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// jwtProbes are the identity and key pairs FuzzCheckJWT asks jwtPolicy
// about: under the strict claim policy, under jwt: {}, under a rule that
// grants SignJWT without a jwt block, under one that grants only Sign, and
// for an unknown identity.
var jwtProbes = []struct{ identity, key string }{
	{"token:strict", "sess-1"},
	{"token:loose", "sess-1"},
	{"token:strict", "other"},
	{"token:signer", "sess-1"},
	{"token:nobody", "sess-1"},
}

// FuzzCheckJWT checks arbitrary JSON claims, decoded as the server and
// encoding/json decode them, at an arbitrary time. CheckJWT never panics,
// is deterministic, and returns nil or an error wrapping exactly one of
// ErrDenied and ErrClaimsRefused; claims decoded with float64 numbers,
// with json.Number and through structpb (as the server passes them) get
// the same answer; whatever the strict claim policy accepts, the
// permissive one accepts too; and accepted claims meet the documented
// rules.
func FuzzCheckJWT(f *testing.F) {
	now := testNow.Unix()
	f.Add([]byte(`{"iss":"https://auth.example","aud":"api","sub":"u","iat":1772366400,"exp":1772367000}`), now)
	f.Add([]byte(`{"iss":"https://auth.example","aud":["api","admin"],"exp":1772367300}`), now)
	f.Add([]byte(`{"iss":"https://auth2.example","aud":[],"exp":1772367000.5,"nbf":1772367001}`), now)
	f.Add([]byte(`{"iss":7,"aud":{"a":"api"},"exp":"1772367000","iat":null}`), now)
	f.Add([]byte(`{"exp":1e400,"iat":-1}`), now)
	f.Add([]byte(`{"exp":8589934000}`), int64(8589933900))
	f.Add([]byte(`{"exp":1772367000,"iat":1772370000}`), now)
	f.Add([]byte(`null`), now)
	f.Add([]byte(`{}`), int64(-1))
	p, err := Parse([]byte(jwtPolicy))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, claims []byte, nowSec int64) {
		// now is the server's clock: a time that UnixNano can hold.
		at := time.Unix(nowSec%(1<<33), 0)
		var floats map[string]any
		if json.Unmarshal(claims, &floats) != nil {
			floats = nil
		}
		var numbers map[string]any
		dec := json.NewDecoder(bytes.NewReader(claims))
		dec.UseNumber()
		if dec.Decode(&numbers) != nil {
			numbers = nil
		}
		var viaStruct map[string]any
		if s, err := structpb.NewStruct(floats); err == nil && floats != nil {
			viaStruct = s.AsMap()
		}
		for _, pr := range jwtProbes {
			err := p.CheckJWT(pr.identity, pr.key, floats, at)
			again := p.CheckJWT(pr.identity, pr.key, floats, at)
			if !sameError(err, again) {
				t.Fatalf("CheckJWT(%s) twice: %v; %v", pr.identity, err, again)
			}
			if err != nil && errors.Is(err, ErrDenied) == errors.Is(err, ErrClaimsRefused) {
				t.Fatalf("CheckJWT(%s) = %v: not exactly one of ErrDenied and ErrClaimsRefused", pr.identity, err)
			}
			if floats != nil && numbers != nil {
				if n := p.CheckJWT(pr.identity, pr.key, numbers, at); !sameError(err, n) {
					t.Fatalf("CheckJWT(%s): float64 claims %v, json.Number claims %v", pr.identity, err, n)
				}
			}
			if viaStruct != nil {
				if s := p.CheckJWT(pr.identity, pr.key, viaStruct, at); !sameError(err, s) {
					t.Fatalf("CheckJWT(%s): %v, through structpb %v", pr.identity, err, s)
				}
			}
		}
		strict := p.CheckJWT("token:strict", "sess-1", floats, at)
		if strict == nil {
			if loose := p.CheckJWT("token:loose", "sess-1", floats, at); loose != nil {
				t.Fatalf("the strict claim policy accepts %s, jwt: {} refuses: %v", claims, loose)
			}
			checkStrictClaims(t, floats, at)
		}
		for _, pr := range jwtProbes[2:] {
			if err := p.CheckJWT(pr.identity, pr.key, floats, at); err == nil {
				t.Fatalf("CheckJWT(%s, %s) accepted %s", pr.identity, pr.key, claims)
			}
		}
	})
}

// sameError reports whether two errors are both nil or have the same text.
func sameError(a, b error) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Error() == b.Error())
}

// checkStrictClaims checks claims that the strict claim policy of
// jwtPolicy accepted against its documented rules.
func checkStrictClaims(t *testing.T, claims map[string]any, now time.Time) {
	t.Helper()
	if iss, _ := claims["iss"].(string); iss != "https://auth.example" && iss != "https://auth2.example" {
		t.Fatalf("accepted iss %v", claims["iss"])
	}
	var auds []any
	switch a := claims["aud"].(type) {
	case string:
		auds = []any{a}
	case []any:
		auds = a
	}
	if len(auds) == 0 {
		t.Fatalf("accepted aud %v", claims["aud"])
	}
	for _, a := range auds {
		if !slices.Contains([]any{"api", "admin"}, a) {
			t.Fatalf("accepted aud %v", claims["aud"])
		}
	}
	nowS := float64(now.Unix())
	exp, ok := claims["exp"].(float64)
	if !ok || exp > nowS+15*60 {
		t.Fatalf("accepted exp %v at %v", claims["exp"], nowS)
	}
	iat := nowS
	if v, ok := claims["iat"]; ok {
		if iat, ok = v.(float64); !ok || iat > nowS+60 {
			t.Fatalf("accepted iat %v at %v", v, nowS)
		}
	}
	if exp <= iat || exp-iat > 15*60 {
		t.Fatalf("accepted exp %v with iat %v", exp, iat)
	}
	if v, ok := claims["nbf"]; ok {
		if nbf, ok := v.(float64); !ok || nbf > exp {
			t.Fatalf("accepted nbf %v with exp %v", v, exp)
		}
	}
}
