package kms

import (
	"crypto"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/keystore"
)

// algorithm describes how Sigil uses keys of one algorithm.
type algorithm struct {
	purpose keystore.Purpose
	keyType hsm.KeyType
	// The rest is for signing keys only.
	mech hsm.Mechanism
	// hash is the digest the algorithm signs; 0 for Ed25519, which signs
	// messages.
	hash crypto.Hash
	// jwa is the JOSE "alg" (RFC 7518, RFC 8037).
	jwa string
	// ecSize is the byte size of r and s for ECDSA, 0 otherwise.
	ecSize int
}

// algorithms maps each supported algorithm to its description.
var algorithms = map[keystore.Algorithm]algorithm{
	keystore.AES256GCM:          {purpose: keystore.PurposeEncryptDecrypt, keyType: hsm.AES256},
	keystore.ECP256SHA256:       {keystore.PurposeSignVerify, hsm.ECP256, hsm.ECDSA, crypto.SHA256, "ES256", 32},
	keystore.ECP384SHA384:       {keystore.PurposeSignVerify, hsm.ECP384, hsm.ECDSA, crypto.SHA384, "ES384", 48},
	keystore.RSAPSS2048SHA256:   {keystore.PurposeSignVerify, hsm.RSA2048, hsm.RSAPSSSHA256, crypto.SHA256, "PS256", 0},
	keystore.RSAPSS3072SHA256:   {keystore.PurposeSignVerify, hsm.RSA3072, hsm.RSAPSSSHA256, crypto.SHA256, "PS256", 0},
	keystore.RSAPSS4096SHA256:   {keystore.PurposeSignVerify, hsm.RSA4096, hsm.RSAPSSSHA256, crypto.SHA256, "PS256", 0},
	keystore.RSAPKCS12048SHA256: {keystore.PurposeSignVerify, hsm.RSA2048, hsm.RSAPKCS1SHA256, crypto.SHA256, "RS256", 0},
	keystore.RSAPKCS13072SHA256: {keystore.PurposeSignVerify, hsm.RSA3072, hsm.RSAPKCS1SHA256, crypto.SHA256, "RS256", 0},
	keystore.RSAPKCS14096SHA256: {keystore.PurposeSignVerify, hsm.RSA4096, hsm.RSAPKCS1SHA256, crypto.SHA256, "RS256", 0},
	keystore.Ed25519:            {keystore.PurposeSignVerify, hsm.Ed25519, hsm.EdDSA, 0, "EdDSA", 0},
}
