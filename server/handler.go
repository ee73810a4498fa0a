package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/kms"
)

// handler implements the KeyManagementService RPCs: decode, call the core,
// encode. Errors go back unchanged; errorInterceptor maps them.
type handler struct {
	svc *kms.Service
}

var _ sigilv1connect.KeyManagementServiceHandler = (*handler)(nil)

func (h *handler) CreateKey(ctx context.Context, req *sigilv1.CreateKeyRequest) (*sigilv1.CreateKeyResponse, error) {
	r := kms.CreateKeyRequest{
		Name:      req.GetName(),
		Algorithm: algorithmFrom(req.GetAlgorithm()),
		Labels:    req.GetLabels(),
	}
	for dst, src := range map[*time.Duration]*durationpb.Duration{
		&r.RotationPeriod: req.GetRotationPeriod(), &r.DestroyDelay: req.GetDestroyDelay(), &r.PublishLead: req.GetPublishLead(),
	} {
		if d := durationFrom(src); d != nil {
			*dst = *d
		}
	}
	k, err := h.svc.CreateKey(ctx, r)
	if err != nil {
		return nil, err
	}
	return &sigilv1.CreateKeyResponse{Key: keyToProto(k, h.svc.Primary(k))}, nil
}

func (h *handler) GetKey(ctx context.Context, req *sigilv1.GetKeyRequest) (*sigilv1.GetKeyResponse, error) {
	k, err := h.svc.GetKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &sigilv1.GetKeyResponse{Key: keyToProto(k, h.svc.Primary(k))}, nil
}

func (h *handler) ListKeys(ctx context.Context, req *sigilv1.ListKeysRequest) (*sigilv1.ListKeysResponse, error) {
	keys, next, err := h.svc.ListKeys(ctx, req.GetPageSize(), req.GetPageToken(), visibleKeys(ctx))
	if err != nil {
		return nil, err
	}
	res := &sigilv1.ListKeysResponse{NextPageToken: next, Keys: make([]*sigilv1.Key, len(keys))}
	for i, k := range keys {
		res.Keys[i] = keyToProto(k, h.svc.Primary(k))
	}
	return res, nil
}

func (h *handler) RotateKey(ctx context.Context, req *sigilv1.RotateKeyRequest) (*sigilv1.RotateKeyResponse, error) {
	k, err := h.svc.GetKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	v, err := h.svc.RotateKey(ctx, k.Name, req.GetImmediate())
	if err != nil {
		return nil, err
	}
	return &sigilv1.RotateKeyResponse{KeyVersion: versionToProto(k, v)}, nil
}

func (h *handler) ListKeyVersions(ctx context.Context, req *sigilv1.ListKeyVersionsRequest) (*sigilv1.ListKeyVersionsResponse, error) {
	k, err := h.svc.GetKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	vs, next, err := h.svc.ListKeyVersions(ctx, k.Name, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &sigilv1.ListKeyVersionsResponse{NextPageToken: next, KeyVersions: make([]*sigilv1.KeyVersion, len(vs))}
	for i, v := range vs {
		res.KeyVersions[i] = versionToProto(k, v)
	}
	return res, nil
}

func (h *handler) Encrypt(ctx context.Context, req *sigilv1.EncryptRequest) (*sigilv1.EncryptResponse, error) {
	ct, v, err := h.svc.Encrypt(ctx, req.GetName(), req.GetPlaintext(), req.GetAssociatedData())
	if err != nil {
		return nil, err
	}
	return &sigilv1.EncryptResponse{Ciphertext: ct, KeyVersion: v}, nil
}

func (h *handler) Decrypt(ctx context.Context, req *sigilv1.DecryptRequest) (*sigilv1.DecryptResponse, error) {
	pt, v, err := h.svc.Decrypt(ctx, req.GetName(), req.GetCiphertext(), req.GetAssociatedData())
	if err != nil {
		return nil, err
	}
	return &sigilv1.DecryptResponse{Plaintext: pt, KeyVersion: v}, nil
}
