// Package keystore defines Store, where Sigil keeps key metadata: names,
// algorithms, versions and their states. Key material never passes through a
// Store; a version records only the identifier of its HSM object.
//
// Implementations must be safe to call from multiple goroutines, except Close.
package keystore

import (
	"context"
	"errors"
	"time"
)

// Errors returned by a Store. Implementations wrap them with %w; the wrapped
// text may hold database details and is meant for logs, never for API callers.
var (
	// ErrNotFound means no key or version matches.
	ErrNotFound = errors.New("keystore: not found")
	// ErrExists means a key with that name already exists.
	ErrExists = errors.New("keystore: already exists")
	// ErrConflict means the row is not in the state the call requires, for
	// example committing a version that is not pending.
	ErrConflict = errors.New("keystore: conflict")
	// ErrUnavailable means the database could not be reached; the call may
	// succeed if retried.
	ErrUnavailable = errors.New("keystore: unavailable")
)

// Purpose is what a key may be used for.
type Purpose string

// Purposes.
const (
	PurposeEncryptDecrypt Purpose = "ENCRYPT_DECRYPT"
	PurposeSignVerify     Purpose = "SIGN_VERIFY"
)

// Algorithm is a key's algorithm. Every version of a key has its algorithm.
type Algorithm string

// Algorithms.
const (
	AES256GCM          Algorithm = "AES_256_GCM"
	ECP256SHA256       Algorithm = "EC_P256_SHA256"
	ECP384SHA384       Algorithm = "EC_P384_SHA384"
	RSAPSS2048SHA256   Algorithm = "RSA_PSS_2048_SHA256"
	RSAPSS3072SHA256   Algorithm = "RSA_PSS_3072_SHA256"
	RSAPSS4096SHA256   Algorithm = "RSA_PSS_4096_SHA256"
	RSAPKCS12048SHA256 Algorithm = "RSA_PKCS1_2048_SHA256"
	RSAPKCS13072SHA256 Algorithm = "RSA_PKCS1_3072_SHA256"
	RSAPKCS14096SHA256 Algorithm = "RSA_PKCS1_4096_SHA256"
	Ed25519            Algorithm = "ED25519"
)

// State is the state of a key version.
type State string

// Version states.
const (
	// StatePending marks a version whose HSM object may not exist yet. It
	// is never used for cryptography and never shown to API callers.
	StatePending State = "PENDING"
	// StateEnabled marks a version that can be used.
	StateEnabled State = "ENABLED"
	// StateDisabled marks a version that is kept but cannot be used.
	StateDisabled State = "DISABLED"
	// StateDestroyScheduled marks a version waiting for destruction.
	StateDestroyScheduled State = "DESTROY_SCHEDULED"
	// StateDestroyed marks a version whose HSM object has been deleted.
	StateDestroyed State = "DESTROYED"
)

// Key is a named key and its metadata.
type Key struct {
	// ID is the key's stable 16-byte identifier (a UUID).
	ID [16]byte
	// Name is unique among keys.
	Name      string
	Purpose   Purpose
	Algorithm Algorithm
	// PrimaryVersion is the version that encrypts new data, 0 while the
	// first version is still pending.
	PrimaryVersion uint32
	// Labels are free-form; a key without labels has nil Labels.
	Labels     map[string]string
	CreateTime time.Time

	// RotationPeriod is how often the key rotates on schedule; 0 means
	// never.
	RotationPeriod time.Duration
	// NextRotationTime is when the next scheduled rotation is due; zero
	// when RotationPeriod is 0.
	NextRotationTime time.Time
	// DestroyDelay is how long a version waits in StateDestroyScheduled.
	DestroyDelay time.Duration
	// PublishLead is how long a new signing version is published before it
	// becomes primary.
	PublishLead time.Duration
	// StagedPrimary is a version that becomes primary at PromoteTime; 0
	// when none is staged.
	StagedPrimary uint32
	PromoteTime   time.Time
}

// Version is one version of a key.
type Version struct {
	KeyID   [16]byte
	Version uint32
	State   State
	// HSMID is the CKA_ID of the version's HSM object.
	HSMID []byte
	// PublicKey is the DER SubjectPublicKeyInfo of a signing version's
	// public key, copied from the HSM when the version was made; nil for
	// symmetric keys and for pending versions.
	PublicKey  []byte
	CreateTime time.Time
	// DestroyTime is when a StateDestroyScheduled version is due for
	// destruction, or when a StateDestroyed one was destroyed.
	DestroyTime time.Time
	// EncryptCount is the number of encryptions reserved for this version
	// so far (see ReserveEncryptions). A cached Version may lag; the
	// count that matters is the one ReserveEncryptions returns.
	EncryptCount int64
}

// KeyUpdate changes a key's settings; nil fields stay as they are.
type KeyUpdate struct {
	RotationPeriod   *time.Duration
	NextRotationTime *time.Time
	DestroyDelay     *time.Duration
	PublishLead      *time.Duration
}

// Transition is a conditional change of a version's state.
type Transition struct {
	// From lists the states the version may be in; otherwise the
	// transition fails with ErrConflict.
	From []State
	To   State
	// DestroyTime is stored with the new state (zero clears it).
	DestroyTime time.Time
	// NotPrimary makes the transition fail with ErrConflict if the version
	// is the key's primary or staged primary.
	NotPrimary bool
	// DueBy, when not zero, makes the transition fail with ErrConflict
	// unless the version's DestroyTime is set and at or before DueBy, as
	// checked under the same lock as the change.
	DueBy time.Time
}

// PublicKey is the public key of one enabled version of a signing key, as
// published in JWKS.
type PublicKey struct {
	KeyID     [16]byte
	KeyName   string
	Algorithm Algorithm
	Version   uint32
	// DER is the SubjectPublicKeyInfo.
	DER        []byte
	CreateTime time.Time
}

// Store persists key metadata.
type Store interface {
	// CreateKey inserts k (with its rotation settings, stored as given)
	// together with its version 1 in state StatePending with the given HSM
	// identifier. k.PrimaryVersion and k.StagedPrimary are ignored and
	// stored as 0 (and PromoteTime as zero). If k.ID is zero, CreateKey
	// assigns a random
	// UUID; the returned Key carries the ID. It returns ErrExists if the
	// name is taken.
	CreateKey(ctx context.Context, k Key, hsmID []byte) (Key, Version, error)

	// GetKey returns the key with the given name, or ErrNotFound.
	GetKey(ctx context.Context, name string) (Key, error)

	// ListKeys returns up to limit keys whose names sort after the name
	// after, ordered by name, bytewise. A limit of zero or less returns no
	// keys.
	ListKeys(ctx context.Context, after string, limit int) ([]Key, error)

	// AddVersion reserves the key's next version number and inserts it in
	// state StatePending with the given HSM identifier. Version numbers are
	// never reused, even when a pending version is later aborted. It returns
	// ErrNotFound if the key does not exist.
	AddVersion(ctx context.Context, keyID [16]byte, hsmID []byte) (Version, error)

	// CommitVersion moves a pending version to StateEnabled, records its
	// public key (nil for symmetric keys; an empty one is stored as nil) and,
	// if primary is true, makes it the key's primary unless a higher version
	// already is, dropping a staged primary no higher than the new primary.
	// It returns ErrNotFound if the version does not exist and
	// ErrConflict if it is not pending.
	CommitVersion(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, primary bool) (Key, Version, error)

	// CommitStaged is CommitVersion with primary false followed by
	// StagePrimary, in one transaction, so that a crash cannot leave an
	// enabled version that never becomes primary.
	CommitStaged(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, promoteTime time.Time) (Key, Version, error)

	// AbortVersion deletes a pending version whose HSM object was never made.
	// If the key then has no versions left, the key is deleted too (a
	// creation that failed). It returns ErrNotFound if the version does not
	// exist and ErrConflict if it is not pending.
	AbortVersion(ctx context.Context, keyID [16]byte, version uint32) error

	// GetVersion returns one version of a key, or ErrNotFound.
	GetVersion(ctx context.Context, keyID [16]byte, version uint32) (Version, error)

	// ListVersions returns up to limit versions of a key numbered above
	// after, in ascending order, including pending ones. It returns
	// ErrNotFound if the key does not exist.
	ListVersions(ctx context.Context, keyID [16]byte, after uint32, limit int) ([]Version, error)

	// ListPublicKeys returns the public keys of every enabled version of the
	// signing key named keyName, or of every signing key if keyName is "",
	// ordered by key name and version. An unknown keyName gives an empty
	// list.
	ListPublicKeys(ctx context.Context, keyName string) ([]PublicKey, error)

	// UpdateKey changes the key's settings and returns the updated key, or
	// ErrNotFound.
	UpdateKey(ctx context.Context, keyID [16]byte, u KeyUpdate) (Key, error)

	// StagePrimary makes version the key's staged primary, to become
	// primary at promoteTime, unless the primary or staged primary is
	// already at least version, when it changes nothing. It returns the key,
	// ErrNotFound for an unknown key or version, and ErrConflict if the
	// version is not enabled.
	StagePrimary(ctx context.Context, keyID [16]byte, version uint32, promoteTime time.Time) (Key, error)

	// PromoteDue makes every staged primary whose PromoteTime is at or
	// before now the primary, and returns the keys it changed. A due staged
	// primary that is no longer enabled, or no longer higher than the
	// primary, is dropped instead (and its key is among those returned).
	PromoteDue(ctx context.Context, now time.Time) ([]Key, error)

	// SetVersionState changes a version's state if t allows it. It returns
	// ErrNotFound for an unknown version and ErrConflict if the version is
	// not in one of t.From, or is primary while t.NotPrimary is set.
	SetVersionState(ctx context.Context, keyID [16]byte, version uint32, t Transition) (Version, error)

	// ListVersionsByState returns up to limit versions in the state, of
	// all keys, oldest first (by CreateTime, then key ID and version), with
	// DestroyTime set and at or before dueBy when dueBy is not zero.
	ListVersionsByState(ctx context.Context, state State, dueBy time.Time, limit int) ([]Version, error)

	// ListDueRotations returns up to limit keys whose NextRotationTime is
	// set and at or before now, earliest first.
	ListDueRotations(ctx context.Context, now time.Time, limit int) ([]Key, error)

	// ClaimRotation moves a due key's NextRotationTime to next if it is
	// still at or before now, and reports whether this call did so. Of
	// several replicas racing for one due rotation, exactly one claims it.
	// A zero next stops scheduled rotation; an unknown key is not claimed
	// (false, without an error).
	ClaimRotation(ctx context.Context, keyID [16]byte, now, next time.Time) (bool, error)

	// ReserveEncryptions adds n to the version's EncryptCount and returns
	// the new count. It returns ErrNotFound for an unknown version.
	ReserveEncryptions(ctx context.Context, keyID [16]byte, version uint32, n int64) (int64, error)

	// Watch calls changed with a key's ID after any change to the key or
	// its versions commits, from any Store on the same database, until ctx
	// ends or the connection fails; it returns the error then. A zero ID
	// means anything may have changed (for example after a reconnect).
	// changed is called from one goroutine and must not block for long.
	Watch(ctx context.Context, changed func(keyID [16]byte)) error

	// RunExclusive runs fn if no other Store on the same database is
	// running an exclusive function under the same name, and reports
	// whether it ran. Scheduled work uses it so that one replica at a time
	// does it.
	RunExclusive(ctx context.Context, name string, fn func(ctx context.Context) error) (bool, error)

	// Ping checks that the database answers, or returns ErrUnavailable.
	Ping(ctx context.Context) error

	// Close releases the store's connections.
	Close()
}
