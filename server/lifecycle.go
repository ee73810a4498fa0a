package server

import (
	"context"
	"time"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/kms"
)

func (h *handler) UpdateKey(ctx context.Context, req *sigilv1.UpdateKeyRequest) (*sigilv1.UpdateKeyResponse, error) {
	u := kms.KeyUpdate{
		RotationPeriod: durationFrom(req.GetRotationPeriod()),
		DestroyDelay:   durationFrom(req.GetDestroyDelay()),
		PublishLead:    durationFrom(req.GetPublishLead()),
	}
	if t := req.GetNextRotationTime(); t != nil {
		next := time.Time{}
		if t.CheckValid() == nil {
			next = t.AsTime()
		}
		u.NextRotationTime = &next
	}
	k, err := h.svc.UpdateKey(ctx, req.GetName(), u)
	if err != nil {
		return nil, err
	}
	return &sigilv1.UpdateKeyResponse{Key: keyToProto(k, h.svc.Primary(k))}, nil
}

func (h *handler) EnableKeyVersion(ctx context.Context, req *sigilv1.EnableKeyVersionRequest) (*sigilv1.EnableKeyVersionResponse, error) {
	k, v, err := h.svc.EnableKeyVersion(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	return &sigilv1.EnableKeyVersionResponse{KeyVersion: versionToProto(k, v)}, nil
}

func (h *handler) DisableKeyVersion(ctx context.Context, req *sigilv1.DisableKeyVersionRequest) (*sigilv1.DisableKeyVersionResponse, error) {
	k, v, err := h.svc.DisableKeyVersion(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	return &sigilv1.DisableKeyVersionResponse{KeyVersion: versionToProto(k, v)}, nil
}

func (h *handler) ScheduleKeyVersionDestruction(ctx context.Context, req *sigilv1.ScheduleKeyVersionDestructionRequest) (*sigilv1.ScheduleKeyVersionDestructionResponse, error) {
	k, v, err := h.svc.ScheduleKeyVersionDestruction(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	return &sigilv1.ScheduleKeyVersionDestructionResponse{KeyVersion: versionToProto(k, v)}, nil
}

func (h *handler) RestoreKeyVersion(ctx context.Context, req *sigilv1.RestoreKeyVersionRequest) (*sigilv1.RestoreKeyVersionResponse, error) {
	k, v, err := h.svc.RestoreKeyVersion(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	return &sigilv1.RestoreKeyVersionResponse{KeyVersion: versionToProto(k, v)}, nil
}

func (h *handler) GenerateDataKey(ctx context.Context, req *sigilv1.GenerateDataKeyRequest) (*sigilv1.GenerateDataKeyResponse, error) {
	dk, err := h.svc.GenerateDataKey(ctx, req.GetName(), req.GetAssociatedData(), req.GetWithoutPlaintext())
	if err != nil {
		return nil, err
	}
	return &sigilv1.GenerateDataKeyResponse{Plaintext: dk.Plaintext, Ciphertext: dk.Ciphertext, KeyVersion: dk.Version}, nil
}

func (h *handler) ReEncrypt(ctx context.Context, req *sigilv1.ReEncryptRequest) (*sigilv1.ReEncryptResponse, error) {
	re, err := h.svc.ReEncrypt(ctx, req.GetName(), req.GetCiphertext(), req.GetAssociatedData(), req.GetDestinationName())
	if err != nil {
		return nil, err
	}
	return &sigilv1.ReEncryptResponse{Ciphertext: re.Ciphertext, KeyVersion: re.Version, SourceKeyVersion: re.SourceVersion}, nil
}
