package kms

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"
)

// MaxClaims is the largest JWT claims set SignJWT accepts, in bytes of JSON.
const MaxClaims = 64 << 10

// jwtHeader is the protected header of a token. The server sets alg and
// kid from the key version; callers may set only typ and cty.
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ,omitempty"`
	Cty string `json:"cty,omitempty"`
}

// SignJWT signs a JWT whose claims are the JSON object claims, with the
// primary version of the named key, and returns the compact JWS and the
// version. The header's alg and kid come from the version; headers may set
// only "typ" (default "JWT") and "cty".
func (s *Service) SignJWT(ctx context.Context, name string, claims []byte, headers map[string]string) (string, uint32, error) {
	if len(claims) > MaxClaims {
		return "", 0, newError(ErrTooLarge, "claims exceed %d bytes", MaxClaims)
	}
	// Compacting validates the JSON; an object is all that may follow.
	// JSON (RFC 8259) and so JWT claims (RFC 7519) are UTF-8, which
	// json.Compact does not check.
	var payload bytes.Buffer
	if err := json.Compact(&payload, claims); err != nil || payload.Len() == 0 || payload.Bytes()[0] != '{' || !utf8.Valid(claims) {
		return "", 0, newError(ErrInvalidArgument, "claims must be a JSON object")
	}
	hdr := jwtHeader{Typ: "JWT"}
	for k, v := range headers {
		if len(v) > 255 || !utf8.ValidString(v) {
			return "", 0, newError(ErrInvalidArgument, "header values must be UTF-8 of at most 255 bytes")
		}
		switch k {
		case "typ":
			hdr.Typ = v
		case "cty":
			hdr.Cty = v
		default:
			return "", 0, newError(ErrInvalidArgument, "only the typ and cty headers may be set")
		}
	}
	k, v, pk, err := s.signingVersion(ctx, name, 0)
	if err != nil {
		return "", 0, err
	}
	alg := algorithms[k.Algorithm]
	hdr.Alg, hdr.Kid = alg.jwa, pk.kid
	hb, err := json.Marshal(hdr)
	if err != nil {
		return "", 0, internal("jwt header", err)
	}
	b64 := base64.RawURLEncoding
	signingInput := b64.EncodeToString(hb) + "." + b64.EncodeToString(payload.Bytes())
	input, err := alg.signInput(InputMessage, []byte(signingInput))
	if err != nil {
		return "", 0, err
	}
	// JWS wants ECDSA signatures as raw r||s, which is what the HSM makes.
	sig, err := s.hsm.Sign(ctx, v.HSMID, input, alg.mech)
	if err != nil {
		return "", 0, internal("sign", err)
	}
	return signingInput + "." + b64.EncodeToString(sig), v.Version, nil
}
