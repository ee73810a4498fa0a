package kms

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzSignJWT signs arbitrary claims bytes with arbitrary typ, cty and
// other headers. Claims are accepted exactly when they are a JSON object
// (RFC 7519: UTF-8 JSON) within MaxClaims, and headers only typ and cty of
// at most 255 bytes of UTF-8; the token then carries the compacted claims
// byte for byte, a header with only alg, kid, typ and cty, and a signature
// that verifies. Anything else fails with ErrInvalidArgument (or
// ErrTooLarge) before any HSM call.
func FuzzSignJWT(f *testing.F) {
	f.Add([]byte(`{"sub":"u","exp":1772367000}`), "", "", "", "")
	f.Add([]byte(" {\n \"aud\" : [ \"a\" , \"b\" ] ,\"n\":1e400}\t"), "at+jwt", "", "", "")
	f.Add([]byte(`{}`), "", "JWT", "alg", "none")
	f.Add([]byte(`{"a":"\ud800"}`), strings.Repeat("x", 256), "", "", "")
	f.Add([]byte(`{"a":1}{"b":2}`), "", "", "", "")
	f.Add([]byte(`["not","an","object"]`), "", "", "", "")
	f.Add([]byte(`null`), "", "", "", "")
	f.Add([]byte("{\"a\":\"\xff\"}"), "", "", "", "")
	f.Add([]byte(`{"a":"<&>\u2028"}`), "\xff", "", "", "")
	f.Add([]byte(`{"sub":"u"}`), "", "", "kid", "mine")
	fx := newCryptFixture(f)
	pub := fx.pubs["ed"][1].(ed25519.PublicKey)
	pk, err := fx.svc.GetPublicKey(context.Background(), "ed", 1)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, claims []byte, typ, cty, otherKey, otherValue string) {
		headers := map[string]string{}
		if typ != "" {
			headers["typ"] = typ
		}
		if cty != "" {
			headers["cty"] = cty
		}
		if otherKey != "" {
			headers[otherKey] = otherValue
		}
		var want []error
		if len(claims) > MaxClaims {
			want = append(want, ErrTooLarge)
		}
		trimmed := bytes.TrimLeft(claims, " \t\r\n")
		if !json.Valid(claims) || !utf8.Valid(claims) || len(trimmed) == 0 || trimmed[0] != '{' {
			want = append(want, ErrInvalidArgument)
		}
		for k, v := range headers {
			if (k != "typ" && k != "cty") || len(v) > 255 || !utf8.ValidString(v) {
				want = append(want, ErrInvalidArgument)
			}
		}
		fx.hsm.ResetCalls()
		token, v, err := fx.svc.SignJWT(context.Background(), "ed", claims, headers)
		if len(want) > 0 {
			checkKind(t, "SignJWT", err, want...)
			if n := fx.hsm.TotalCalls(); n != 0 {
				t.Fatalf("a refused SignJWT made %d HSM calls", n)
			}
			return
		}
		if err != nil || v != 1 {
			t.Fatalf("SignJWT(%q, %v) = %d, %v", claims, headers, v, err)
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatalf("token %q has %d parts", token, len(parts))
		}
		b64 := base64.RawURLEncoding
		hb, herr := b64.DecodeString(parts[0])
		payload, perr := b64.DecodeString(parts[1])
		sig, serr := b64.DecodeString(parts[2])
		if herr != nil || perr != nil || serr != nil {
			t.Fatalf("token %q is not three base64url parts", token)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, claims); err != nil || !bytes.Equal(payload, compact.Bytes()) {
			t.Fatalf("payload %q, want the compacted claims %q", payload, compact.Bytes())
		}
		// An empty typ or cty is left out.
		wantTyp, ok := headers["typ"]
		if !ok {
			wantTyp = "JWT"
		}
		wantCty := headers["cty"]
		var hdr map[string]string
		if err := json.Unmarshal(hb, &hdr); err != nil || hdr["alg"] != "EdDSA" || hdr["kid"] != pk.KID ||
			hdr["typ"] != wantTyp || hdr["cty"] != wantCty || len(hdr) != 2+min(len(wantTyp), 1)+min(len(wantCty), 1) {
			t.Fatalf("header %s (%v), want alg EdDSA, kid %s, typ %q, cty %q", hb, err, pk.KID, wantTyp, wantCty)
		}
		if !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
			t.Fatal("the token's signature does not verify")
		}
	})
}
