package server

import (
	"github.com/google/uuid"
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

func keyToProto(k keystore.Key) *sigilv1.Key {
	return &sigilv1.Key{
		Id:             uuid.UUID(k.ID).String(),
		Name:           k.Name,
		Purpose:        purposeToProto[k.Purpose],
		Algorithm:      algorithmToProto[k.Algorithm],
		PrimaryVersion: k.PrimaryVersion,
		CreateTime:     timestamppb.New(k.CreateTime),
		Labels:         k.Labels,
	}
}

func versionToProto(k keystore.Key, v keystore.Version) *sigilv1.KeyVersion {
	return &sigilv1.KeyVersion{
		KeyName:    k.Name,
		Version:    v.Version,
		State:      stateToProto[v.State],
		Algorithm:  algorithmToProto[k.Algorithm],
		CreateTime: timestamppb.New(v.CreateTime),
	}
}
