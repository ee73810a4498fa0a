package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"log/slog"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/policy"
)

// fuzzRPC is one RPC of the handler, called with a decoded request.
type fuzzRPC struct {
	name string
	req  proto.Message // a zero request, for its type
	call func(context.Context, *handler, proto.Message) (proto.Message, error)
}

func rpcOf[Req, Res proto.Message](name string, m func(*handler, context.Context, Req) (Res, error)) fuzzRPC {
	var zero Req
	return fuzzRPC{name: name, req: zero.ProtoReflect().Type().Zero().Interface(),
		call: func(ctx context.Context, h *handler, msg proto.Message) (proto.Message, error) {
			res, err := m(h, ctx, msg.(Req))
			if err != nil {
				return nil, err
			}
			return res, nil
		}}
}

// fuzzRPCs are the RPCs FuzzHandler calls, by the index it is given.
var fuzzRPCs = []fuzzRPC{
	rpcOf("CreateKey", (*handler).CreateKey),
	rpcOf("GetKey", (*handler).GetKey),
	rpcOf("ListKeys", (*handler).ListKeys),
	rpcOf("UpdateKey", (*handler).UpdateKey),
	rpcOf("RotateKey", (*handler).RotateKey),
	rpcOf("ListKeyVersions", (*handler).ListKeyVersions),
	rpcOf("EnableKeyVersion", (*handler).EnableKeyVersion),
	rpcOf("DisableKeyVersion", (*handler).DisableKeyVersion),
	rpcOf("ScheduleKeyVersionDestruction", (*handler).ScheduleKeyVersionDestruction),
	rpcOf("RestoreKeyVersion", (*handler).RestoreKeyVersion),
	rpcOf("Encrypt", (*handler).Encrypt),
	rpcOf("Decrypt", (*handler).Decrypt),
	rpcOf("ReEncrypt", (*handler).ReEncrypt),
	rpcOf("GenerateDataKey", (*handler).GenerateDataKey),
	rpcOf("Sign", (*handler).Sign),
	rpcOf("Verify", (*handler).Verify),
	rpcOf("GetPublicKey", (*handler).GetPublicKey),
	rpcOf("SignJWT", (*handler).SignJWT),
}

// fuzzBackend is hsmtest.Memory without RSA key generation, which is far
// too slow for a fuzz loop: for an RSA spec it returns a stand-in ECDSA
// public key and keeps no private key. FuzzHandler's fixture has no RSA
// key, so only CreateKey sees the stand-in.
type fuzzBackend struct {
	*hsmtest.Memory
	standIn crypto.PublicKey
}

func (b fuzzBackend) GenerateKey(ctx context.Context, spec hsm.KeySpec) (crypto.PublicKey, error) {
	switch spec.Type {
	case hsm.RSA2048, hsm.RSA3072, hsm.RSA4096:
		return b.standIn, nil
	}
	return b.Memory.GenerateKey(ctx, spec)
}

// fuzzPolicy grants token:a everything, with a claim policy for SignJWT.
const fuzzPolicy = `
rules:
  - identities: ["token:a"]
    keys: ["*"]
    allow: ["admin", "*"]
    jwt:
      issuers: ["https://auth.example"]
      max_lifetime: 15m
`

// FuzzHandler decodes arbitrary bytes as the request of an arbitrary RPC
// and calls the handler, over in-memory fakes holding an AES key "aes"
// and signing keys "ec" and "ed", and the authorization check under a
// fixed policy. Nothing panics; every failure maps to a Connect code that
// blames the caller (InvalidArgument, NotFound, AlreadyExists,
// FailedPrecondition, ResourceExhausted), never an internal or retryable
// one; every response encodes, in binary and in JSON; and the check
// allows, or refuses with PermissionDenied.
func FuzzHandler(f *testing.F) {
	hour := durationpb.New(time.Hour)
	claims, err := structpb.NewStruct(map[string]any{"iss": "https://auth.example", "sub": "u", "exp": 1772367000.0})
	if err != nil {
		f.Fatal(err)
	}
	seeds := map[string]proto.Message{
		"CreateKey":                     &sigilv1.CreateKeyRequest{Name: "new", Algorithm: sigilv1.Algorithm_ALGORITHM_RSA_PSS_4096_SHA256, RotationPeriod: hour, Labels: map[string]string{"a": "b"}},
		"GetKey":                        &sigilv1.GetKeyRequest{Name: "aes"},
		"ListKeys":                      &sigilv1.ListKeysRequest{PageSize: 1, PageToken: "YWVz"},
		"UpdateKey":                     &sigilv1.UpdateKeyRequest{Name: "ed", RotationPeriod: hour, NextRotationTime: &timestamppb.Timestamp{Seconds: -62135596801}},
		"RotateKey":                     &sigilv1.RotateKeyRequest{Name: "ed"},
		"ListKeyVersions":               &sigilv1.ListKeyVersionsRequest{Name: "aes", PageSize: 1},
		"EnableKeyVersion":              &sigilv1.EnableKeyVersionRequest{Name: "aes", Version: 1},
		"DisableKeyVersion":             &sigilv1.DisableKeyVersionRequest{Name: "ec", Version: 1},
		"ScheduleKeyVersionDestruction": &sigilv1.ScheduleKeyVersionDestructionRequest{Name: "aes", Version: 2},
		"RestoreKeyVersion":             &sigilv1.RestoreKeyVersionRequest{Name: "aes", Version: 1},
		"Encrypt":                       &sigilv1.EncryptRequest{Name: "aes", Plaintext: []byte("hello"), AssociatedData: []byte("tea")},
		"Decrypt":                       &sigilv1.DecryptRequest{Name: "aes", Ciphertext: make([]byte, 49)},
		"ReEncrypt":                     &sigilv1.ReEncryptRequest{Name: "aes", Ciphertext: []byte{1}, DestinationName: "ec"},
		"GenerateDataKey":               &sigilv1.GenerateDataKeyRequest{Name: "aes", WithoutPlaintext: true},
		"Sign":                          &sigilv1.SignRequest{Name: "ec", Input: &sigilv1.SignRequest_Message{Message: []byte("m")}, Encoding: sigilv1.SignatureEncoding(7)},
		"Verify":                        &sigilv1.VerifyRequest{Name: "ed", Input: &sigilv1.VerifyRequest_Digest{Digest: make([]byte, 32)}, Signature: make([]byte, 64)},
		"GetPublicKey":                  &sigilv1.GetPublicKeyRequest{Name: "ec", Version: 1},
		"SignJWT":                       &sigilv1.SignJWTRequest{Name: "ed", Claims: claims, Headers: map[string]string{"typ": "at+jwt"}},
	}
	for i, r := range fuzzRPCs {
		b, err := proto.Marshal(seeds[r.name])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	pol, err := policy.Parse([]byte(fuzzPolicy))
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1772366400, 0)
	acc := &access{log: slog.New(slog.DiscardHandler), policy: func() *policy.Policy { return pol }, now: func() time.Time { return now }}
	standIn, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		r := fuzzRPCs[int(which)%len(fuzzRPCs)]
		req := r.req.ProtoReflect().Type().New().Interface()
		if proto.Unmarshal(b, req) != nil {
			return
		}
		if err := acc.authorize(pol, "token:a", r.name, req); err != nil {
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != connect.CodePermissionDenied {
				t.Fatalf("authorize(%s %v) = %v; want nil or PermissionDenied", r.name, req, err)
			}
		} else if !pol.Allow("token:a", r.name, nameOf(req)) {
			t.Fatalf("authorize(%s %v) allowed what the policy does not", r.name, req)
		}
		h := newFuzzHandler(t, fuzzBackend{Memory: hsmtest.NewMemory(), standIn: standIn.Public()})
		res, err := r.call(context.Background(), h, req)
		if err != nil {
			cerr, serverFault := toConnectError(err)
			switch cerr.Code() {
			case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeAlreadyExists,
				connect.CodeFailedPrecondition, connect.CodeResourceExhausted:
			default:
				t.Fatalf("%s(%v): %v, mapped to %v", r.name, req, err, cerr.Code())
			}
			if serverFault {
				t.Fatalf("%s(%v): %v counts as the server's fault", r.name, req, err)
			}
			return
		}
		if _, err := proto.Marshal(res); err != nil {
			t.Fatalf("%s(%v): the response does not encode: %v", r.name, req, err)
		}
		if _, err := protojson.Marshal(res); err != nil {
			t.Fatalf("%s(%v): the response does not encode as JSON: %v", r.name, req, err)
		}
	})
}

// newFuzzHandler returns a handler over b and an in-memory store with an
// AES key "aes" (version 1, and 2 primary), and signing keys "ec" (ECDSA
// P-256) and "ed" (Ed25519).
func newFuzzHandler(t *testing.T, b hsm.Backend) *handler {
	t.Helper()
	ctx := context.Background()
	svc := kms.New(b, keystoretest.NewMemory())
	for name, alg := range map[string]keystore.Algorithm{"aes": keystore.AES256GCM, "ec": keystore.ECP256SHA256, "ed": keystore.Ed25519} {
		if _, err := svc.CreateKey(ctx, kms.CreateKeyRequest{Name: name, Algorithm: alg}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.RotateKey(ctx, "aes", true); err != nil {
		t.Fatal(err)
	}
	return &handler{svc: svc}
}
