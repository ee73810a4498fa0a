// Package hsm defines Backend, the narrow interface through which Sigil uses
// a hardware security module. Keys are generated inside the module and are
// addressed by an opaque identifier (the PKCS#11 CKA_ID); no method accepts or
// returns key material.
//
// Implementations must be safe to call from multiple goroutines, except Close,
// which must not run concurrently with any other method.
package hsm

import (
	"context"
	"crypto"
	"errors"
)

// Errors returned by a Backend. Implementations wrap them with %w so that
// callers can test for them with errors.Is; the wrapped text may hold module
// details and is meant for logs, never for API callers.
var (
	// ErrNotFound means no key object with the given identifier exists.
	ErrNotFound = errors.New("hsm: key not found")
	// ErrExists means a key object with the given identifier already exists.
	ErrExists = errors.New("hsm: key already exists")
	// ErrDecrypt means the ciphertext, nonce or associated data did not
	// authenticate under the key.
	ErrDecrypt = errors.New("hsm: decryption failed")
	// ErrUnavailable means the module, token or session could not serve the
	// call. The call may succeed if retried later.
	ErrUnavailable = errors.New("hsm: unavailable")
	// ErrInvalid means the request was malformed (bad nonce length, unknown
	// key type, empty identifier). It is a programming error in the caller.
	ErrInvalid = errors.New("hsm: invalid request")
)

// KeyType is the kind of key object a Backend generates.
type KeyType int

// Key types. Each key has exactly one purpose: an AES key only encrypts and
// decrypts; the private key of a key pair only signs.
const (
	// AES256 is a 256-bit AES secret key used with AES-GCM.
	AES256 KeyType = iota + 1
	// ECP256 is an ECDSA key pair on NIST P-256.
	ECP256
	// ECP384 is an ECDSA key pair on NIST P-384.
	ECP384
	// RSA2048 is an RSA key pair with a 2048-bit modulus and exponent 65537.
	RSA2048
	// RSA3072 is an RSA key pair with a 3072-bit modulus and exponent 65537.
	RSA3072
	// RSA4096 is an RSA key pair with a 4096-bit modulus and exponent 65537.
	RSA4096
	// Ed25519 is an Ed25519 key pair (PKCS#11 CKK_EC_EDWARDS).
	Ed25519
)

var keyTypeNames = map[KeyType]string{
	AES256: "AES256", ECP256: "ECP256", ECP384: "ECP384",
	RSA2048: "RSA2048", RSA3072: "RSA3072", RSA4096: "RSA4096", Ed25519: "Ed25519",
}

// String returns the key type's name.
func (t KeyType) String() string {
	if n, ok := keyTypeNames[t]; ok {
		return n
	}
	return "unknown"
}

// Asymmetric reports whether the key type is a signing key pair.
func (t KeyType) Asymmetric() bool {
	return t >= ECP256 && t <= Ed25519
}

// Mechanism is a signature scheme for Sign.
type Mechanism int

// Signature mechanisms.
const (
	// ECDSA signs a digest (CKM_ECDSA). The signature is the raw
	// concatenation r||s, each padded to the curve's byte size.
	ECDSA Mechanism = iota + 1
	// RSAPSSSHA256 signs a SHA-256 digest with RSASSA-PSS, MGF1 with
	// SHA-256 and a 32-byte salt (CKM_RSA_PKCS_PSS).
	RSAPSSSHA256
	// RSAPKCS1SHA256 signs a SHA-256 digest with RSASSA-PKCS1-v1_5
	// (CKM_RSA_PKCS over the DigestInfo).
	RSAPKCS1SHA256
	// EdDSA signs a whole message with pure Ed25519 (CKM_EDDSA).
	EdDSA
)

// IDSize is the length of a key identifier in bytes.
const IDSize = 16

// NonceSize is the length of an AES-GCM nonce in bytes (96 bits).
const NonceSize = 12

// TagSize is the length of an AES-GCM authentication tag in bytes.
const TagSize = 16

// KeySpec describes a key to generate.
type KeySpec struct {
	// ID is the identifier of the new key (CKA_ID), IDSize random bytes
	// chosen by the caller and recorded in the key's metadata first.
	ID []byte
	// Label is a human-readable label (CKA_LABEL) for operators. It never
	// contains caller-controlled text.
	Label string
	// Type is the kind of key.
	Type KeyType
}

// Backend is a hardware security module that holds Sigil's keys.
//
// All methods honour ctx while waiting for a session: when ctx ends first
// they return an error wrapping both ErrUnavailable and ctx.Err(), so that a
// caller may test for either. A call already running inside the module
// cannot be interrupted and delays the return by as long as it takes. Every
// method returns ErrInvalid for an identifier that is not IDSize bytes long.
//
// An ErrUnavailable error never hides another answer: an implementation that
// cannot tell whether a key exists (the token is gone, or logged out) returns
// ErrUnavailable, never ErrNotFound.
type Backend interface {
	// GenerateKey creates a persistent, sensitive, non-extractable key of the
	// given type inside the module. For a key pair only the private key is
	// kept in the token, and its public key is returned (an
	// *ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey); for AES256 the
	// public key is nil. It returns ErrExists if an object with spec.ID
	// already exists, ErrInvalid for a bad spec and ErrUnavailable if the
	// module cannot be reached.
	GenerateKey(ctx context.Context, spec KeySpec) (crypto.PublicKey, error)

	// Sign signs input with the private key id using mechanism m. For
	// EdDSA input is the message; for the others it is the digest, whose
	// length the caller has checked. It returns ErrNotFound if no such key
	// exists, ErrInvalid if the key cannot sign with m and ErrUnavailable if
	// the module cannot be reached.
	Sign(ctx context.Context, id, input []byte, m Mechanism) ([]byte, error)

	// Seal encrypts plaintext with AES-256-GCM under the key id using the
	// given NonceSize-byte nonce and additional data, and returns the
	// ciphertext followed by the TagSize-byte tag. It returns ErrNotFound if
	// no such key exists, ErrInvalid for a bad nonce and ErrUnavailable if the
	// module cannot be reached.
	Seal(ctx context.Context, id, nonce, plaintext, aad []byte) ([]byte, error)

	// Open authenticates and decrypts ciphertext (with its trailing tag). It
	// returns ErrDecrypt if authentication fails, ErrNotFound if no such key
	// exists, ErrInvalid for a bad nonce and ErrUnavailable if the module
	// cannot be reached.
	Open(ctx context.Context, id, nonce, ciphertext, aad []byte) ([]byte, error)

	// Destroy deletes the key object. It returns ErrNotFound if no such key
	// exists.
	Destroy(ctx context.Context, id []byte) error

	// Exists reports whether a key object with the identifier exists.
	Exists(ctx context.Context, id []byte) (bool, error)

	// Random returns n random bytes from the module's generator
	// (C_GenerateRandom). It returns ErrInvalid for n outside 1..1024 and
	// ErrUnavailable if the module cannot be reached.
	Random(ctx context.Context, n int) ([]byte, error)

	// Ping checks that the module answers and the session is logged in. It
	// returns ErrUnavailable otherwise.
	Ping(ctx context.Context) error

	// Close releases all sessions and the module.
	Close() error
}
