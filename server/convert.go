package server

import (
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/keystore"
)

var algorithmToProto = map[keystore.Algorithm]sigilv1.Algorithm{
	keystore.AES256GCM:          sigilv1.Algorithm_ALGORITHM_AES_256_GCM,
	keystore.ECP256SHA256:       sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256,
	keystore.ECP384SHA384:       sigilv1.Algorithm_ALGORITHM_EC_P384_SHA384,
	keystore.RSAPSS2048SHA256:   sigilv1.Algorithm_ALGORITHM_RSA_PSS_2048_SHA256,
	keystore.RSAPSS3072SHA256:   sigilv1.Algorithm_ALGORITHM_RSA_PSS_3072_SHA256,
	keystore.RSAPSS4096SHA256:   sigilv1.Algorithm_ALGORITHM_RSA_PSS_4096_SHA256,
	keystore.RSAPKCS12048SHA256: sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_2048_SHA256,
	keystore.RSAPKCS13072SHA256: sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_3072_SHA256,
	keystore.RSAPKCS14096SHA256: sigilv1.Algorithm_ALGORITHM_RSA_PKCS1_4096_SHA256,
	keystore.Ed25519:            sigilv1.Algorithm_ALGORITHM_ED25519,
}

var algorithmFromProto = func() map[sigilv1.Algorithm]keystore.Algorithm {
	m := make(map[sigilv1.Algorithm]keystore.Algorithm, len(algorithmToProto))
	for k, v := range algorithmToProto {
		m[v] = k
	}
	return m
}()

var purposeToProto = map[keystore.Purpose]sigilv1.Purpose{
	keystore.PurposeEncryptDecrypt: sigilv1.Purpose_PURPOSE_ENCRYPT_DECRYPT,
	keystore.PurposeSignVerify:     sigilv1.Purpose_PURPOSE_SIGN_VERIFY,
}

var stateToProto = map[keystore.State]sigilv1.VersionState{
	keystore.StateEnabled:          sigilv1.VersionState_VERSION_STATE_ENABLED,
	keystore.StateDisabled:         sigilv1.VersionState_VERSION_STATE_DISABLED,
	keystore.StateDestroyScheduled: sigilv1.VersionState_VERSION_STATE_DESTROY_SCHEDULED,
	keystore.StateDestroyed:        sigilv1.VersionState_VERSION_STATE_DESTROYED,
}

// algorithmFrom returns the core algorithm for an API value; an unknown or
// unsupported value becomes "", which the core rejects.
func algorithmFrom(a sigilv1.Algorithm) keystore.Algorithm {
	return algorithmFromProto[a]
}

// keyToProto converts a key; primary is the version that is primary now
// (a staged primary whose time has come counts).
func keyToProto(k keystore.Key, primary uint32) *sigilv1.Key {
	pk := &sigilv1.Key{
		Id:               uuid.UUID(k.ID).String(),
		Name:             k.Name,
		Purpose:          purposeToProto[k.Purpose],
		Algorithm:        algorithmToProto[k.Algorithm],
		PrimaryVersion:   primary,
		CreateTime:       timestamppb.New(k.CreateTime),
		Labels:           k.Labels,
		RotationPeriod:   durationOrNil(k.RotationPeriod),
		NextRotationTime: timeOrNil(k.NextRotationTime),
		DestroyDelay:     durationpb.New(k.DestroyDelay),
		PublishLead:      durationpb.New(k.PublishLead),
	}
	if k.StagedPrimary > primary {
		pk.StagedPrimaryVersion = k.StagedPrimary
		pk.PromoteTime = timestamppb.New(k.PromoteTime)
	}
	return pk
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func timeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// durationFrom returns a checked duration, or nil when d is unset; an
// out-of-range duration becomes -1, which the core refuses.
func durationFrom(d *durationpb.Duration) *time.Duration {
	if d == nil {
		return nil
	}
	v := time.Duration(-1)
	if d.CheckValid() == nil {
		v = d.AsDuration()
	}
	return &v
}

func versionToProto(k keystore.Key, v keystore.Version) *sigilv1.KeyVersion {
	return &sigilv1.KeyVersion{
		KeyName:     k.Name,
		Version:     v.Version,
		State:       stateToProto[v.State],
		Algorithm:   algorithmToProto[k.Algorithm],
		CreateTime:  timestamppb.New(v.CreateTime),
		DestroyTime: timeOrNil(v.DestroyTime),
	}
}
