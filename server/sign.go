package server

import (
	"context"

	"google.golang.org/protobuf/encoding/protojson"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/kms"
)

var encodings = map[sigilv1.SignatureEncoding]kms.Encoding{
	sigilv1.SignatureEncoding_SIGNATURE_ENCODING_UNSPECIFIED: kms.EncodingDefault,
	sigilv1.SignatureEncoding_SIGNATURE_ENCODING_DER:         kms.EncodingDER,
	sigilv1.SignatureEncoding_SIGNATURE_ENCODING_RAW:         kms.EncodingRaw,
}

// encodingFrom maps an API encoding; an unknown value becomes one the core
// rejects.
func encodingFrom(e sigilv1.SignatureEncoding) kms.Encoding {
	if v, ok := encodings[e]; ok {
		return v
	}
	return -1
}

func (h *handler) Sign(ctx context.Context, req *sigilv1.SignRequest) (*sigilv1.SignResponse, error) {
	r := kms.SignRequest{Name: req.GetName(), Version: req.GetVersion(), Encoding: encodingFrom(req.GetEncoding())}
	switch in := req.GetInput().(type) {
	case *sigilv1.SignRequest_Digest:
		r.Kind, r.Data = kms.InputDigest, in.Digest
	case *sigilv1.SignRequest_Message:
		r.Kind, r.Data = kms.InputMessage, in.Message
	}
	sig, err := h.svc.Sign(ctx, r)
	if err != nil {
		return nil, err
	}
	return &sigilv1.SignResponse{Signature: sig.Signature, KeyVersion: sig.Version, Algorithm: algorithmToProto[sig.Algorithm]}, nil
}

func (h *handler) Verify(ctx context.Context, req *sigilv1.VerifyRequest) (*sigilv1.VerifyResponse, error) {
	r := kms.VerifyRequest{Name: req.GetName(), Version: req.GetVersion(), Signature: req.GetSignature(), Encoding: encodingFrom(req.GetEncoding())}
	switch in := req.GetInput().(type) {
	case *sigilv1.VerifyRequest_Digest:
		r.Kind, r.Data = kms.InputDigest, in.Digest
	case *sigilv1.VerifyRequest_Message:
		r.Kind, r.Data = kms.InputMessage, in.Message
	}
	valid, v, err := h.svc.Verify(ctx, r)
	if err != nil {
		return nil, err
	}
	return &sigilv1.VerifyResponse{Valid: valid, KeyVersion: v}, nil
}

func (h *handler) GetPublicKey(ctx context.Context, req *sigilv1.GetPublicKeyRequest) (*sigilv1.GetPublicKeyResponse, error) {
	pk, err := h.svc.GetPublicKey(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	return &sigilv1.GetPublicKeyResponse{
		Pem:        pk.PEM,
		Jwk:        string(pk.JWK),
		Algorithm:  algorithmToProto[pk.Algorithm],
		KeyVersion: pk.Version,
	}, nil
}

func (h *handler) SignJWT(ctx context.Context, req *sigilv1.SignJWTRequest) (*sigilv1.SignJWTResponse, error) {
	// Claims that do not encode as JSON (a NaN number) stay nil, which the
	// core refuses as not a JSON object.
	var claims []byte
	if req.GetClaims() != nil {
		if b, err := protojson.Marshal(req.GetClaims()); err == nil {
			claims = b
		}
	}
	token, v, err := h.svc.SignJWT(ctx, req.GetName(), claims, req.GetHeaders())
	if err != nil {
		return nil, err
	}
	return &sigilv1.SignJWTResponse{Token: token, KeyVersion: v}, nil
}
