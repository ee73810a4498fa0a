// Package kms is Sigil's core: it creates keys, rotates them and encrypts
// and decrypts with them, using an hsm.Backend for all cryptography and a
// keystore.Store for metadata. It knows nothing of transports, SQL or
// PKCS#11.
//
// A Service is safe to call from multiple goroutines.
package kms

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/keystore"
)

// Service implements Sigil's key operations.
type Service struct {
	hsm   hsm.Backend
	store keystore.Store
	rand  io.Reader
	// pubs caches parsed public keys by versionRef. Entries never change.
	pubs sync.Map
}

// Option configures a Service.
type Option func(*Service)

// WithRandom sets the source of nonces, key ids and HSM ids. The default
// is crypto/rand; tests use a fixed source for golden vectors.
func WithRandom(r io.Reader) Option {
	return func(s *Service) { s.rand = r }
}

// New returns a Service over the backend and the store.
func New(b hsm.Backend, s keystore.Store, opts ...Option) *Service {
	svc := &Service{hsm: b, store: s, rand: rand.Reader}
	for _, o := range opts {
		o(svc)
	}
	return svc
}

// CreateKeyRequest holds the fields of a new key.
type CreateKeyRequest struct {
	Name      string
	Algorithm keystore.Algorithm
	Labels    map[string]string
}

// CreateKey creates a key and its first version, which becomes primary.
func (s *Service) CreateKey(ctx context.Context, req CreateKeyRequest) (keystore.Key, error) {
	if err := checkName(req.Name); err != nil {
		return keystore.Key{}, err
	}
	alg, ok := algorithms[req.Algorithm]
	if !ok {
		return keystore.Key{}, newError(ErrInvalidArgument, "unsupported algorithm")
	}
	if err := checkLabels(req.Labels); err != nil {
		return keystore.Key{}, err
	}
	id, err := uuid.NewRandomFromReader(s.rand)
	if err != nil {
		return keystore.Key{}, fmt.Errorf("kms: key id: %w", err)
	}
	hsmID, err := s.newHSMID()
	if err != nil {
		return keystore.Key{}, err
	}
	k := keystore.Key{ID: id, Name: req.Name, Purpose: alg.purpose, Algorithm: req.Algorithm, Labels: req.Labels}
	k, v, err := s.store.CreateKey(ctx, k, hsmID)
	if errors.Is(err, keystore.ErrExists) {
		return keystore.Key{}, newError(ErrAlreadyExists, "key already exists")
	}
	if err != nil {
		return keystore.Key{}, internal("create key", err)
	}
	k, _, err = s.makeVersion(ctx, k, v)
	return k, err
}

// makeVersion generates the HSM object of a pending version and commits it
// as the key's primary. If the HSM object cannot be made, the pending row is
// removed again, so no row ever points at a missing object.
func (s *Service) makeVersion(ctx context.Context, k keystore.Key, v keystore.Version) (keystore.Key, keystore.Version, error) {
	spec := hsm.KeySpec{ID: v.HSMID, Label: hsmLabel(k.ID, v.Version), Type: algorithms[k.Algorithm].keyType}
	pub, err := s.hsm.GenerateKey(ctx, spec)
	var der []byte
	if err == nil && pub != nil {
		der, err = x509.MarshalPKIXPublicKey(pub)
	}
	if err != nil {
		// The object may exist (a public key that did not encode): remove
		// it before the row, so no row points at a missing object and no
		// object is left unaccounted for.
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		defer cancel()
		if pub != nil {
			err = errors.Join(err, s.hsm.Destroy(cleanupCtx, v.HSMID))
		}
		if aerr := s.store.AbortVersion(cleanupCtx, k.ID, v.Version); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return keystore.Key{}, keystore.Version{}, internal("generate key", err)
	}
	// The HSM object exists now: record it even if the caller has gone
	// away, so that the key is never left half-made.
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	k, v, err = s.store.CommitVersion(commitCtx, k.ID, v.Version, der, true)
	if err != nil {
		return keystore.Key{}, keystore.Version{}, internal("commit version", err)
	}
	return k, v, nil
}

// commitTimeout bounds the cleanup and commit steps of making a version,
// which run even after the caller's deadline.
const commitTimeout = 10 * time.Second

// hsmLabel is the CKA_LABEL of a version's HSM object. It holds no
// caller-controlled text.
func hsmLabel(keyID [16]byte, version uint32) string {
	return fmt.Sprintf("sigil:%s:v%d", uuid.UUID(keyID), version)
}

func (s *Service) newHSMID() ([]byte, error) {
	id := make([]byte, hsm.IDSize)
	if _, err := io.ReadFull(s.rand, id); err != nil {
		return nil, fmt.Errorf("kms: hsm id: %w", err)
	}
	return id, nil
}

// GetKey returns the key with the given name.
func (s *Service) GetKey(ctx context.Context, name string) (keystore.Key, error) {
	if err := checkName(name); err != nil {
		return keystore.Key{}, err
	}
	k, err := s.store.GetKey(ctx, name)
	if errors.Is(err, keystore.ErrNotFound) {
		return keystore.Key{}, newError(ErrNotFound, "key not found")
	}
	if err != nil {
		return keystore.Key{}, internal("get key", err)
	}
	return k, nil
}

// ListKeys returns up to pageSize keys (0 means the default) after the
// page token, and the token of the next page, empty on the last one.
func (s *Service) ListKeys(ctx context.Context, size int32, token string) ([]keystore.Key, string, error) {
	n, err := pageSize(size)
	if err != nil {
		return nil, "", err
	}
	after, err := parseNameToken(token)
	if err != nil {
		return nil, "", err
	}
	keys, err := s.store.ListKeys(ctx, after, n+1)
	if err != nil {
		return nil, "", internal("list keys", err)
	}
	if len(keys) <= n {
		return keys, "", nil
	}
	keys = keys[:n]
	return keys, nameToken(keys[n-1].Name), nil
}

// RotateKey creates a new version of the key and makes it primary. Older
// versions stay enabled and keep decrypting.
func (s *Service) RotateKey(ctx context.Context, name string) (keystore.Version, error) {
	k, err := s.GetKey(ctx, name)
	if err != nil {
		return keystore.Version{}, err
	}
	hsmID, err := s.newHSMID()
	if err != nil {
		return keystore.Version{}, err
	}
	v, err := s.store.AddVersion(ctx, k.ID, hsmID)
	if errors.Is(err, keystore.ErrNotFound) {
		return keystore.Version{}, newError(ErrNotFound, "key not found")
	}
	if err != nil {
		return keystore.Version{}, internal("add version", err)
	}
	_, v, err = s.makeVersion(ctx, k, v)
	return v, err
}

// ListKeyVersions returns up to size versions of the key after the page
// token, in ascending order, and the token of the next page.
func (s *Service) ListKeyVersions(ctx context.Context, name string, size int32, token string) ([]keystore.Version, string, error) {
	n, err := pageSize(size)
	if err != nil {
		return nil, "", err
	}
	after, err := parseVersionToken(token)
	if err != nil {
		return nil, "", err
	}
	k, err := s.GetKey(ctx, name)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.store.ListVersions(ctx, k.ID, after, n+1)
	if err != nil {
		return nil, "", internal("list versions", err)
	}
	next := ""
	if len(rows) > n {
		rows = rows[:n]
		next = versionToken(rows[n-1].Version)
	}
	out := make([]keystore.Version, 0, len(rows))
	for _, v := range rows {
		if v.State != keystore.StatePending {
			out = append(out, v)
		}
	}
	return out, next, nil
}

// Ready reports whether the HSM and the database answer.
func (s *Service) Ready(ctx context.Context) error {
	hsmErr := make(chan error, 1)
	go func() { hsmErr <- s.hsm.Ping(ctx) }()
	dbErr := s.store.Ping(ctx)
	if err := errors.Join(<-hsmErr, dbErr); err != nil {
		return internal("ready", err)
	}
	return nil
}

// internal wraps a failure of the HSM or the store. Unavailability keeps its
// kind so that callers may retry; the text stays for logs.
func internal(op string, err error) error {
	var kerr *Error
	if errors.As(err, &kerr) {
		return err
	}
	if errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, keystore.ErrUnavailable) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	}
	return fmt.Errorf("kms: %s: %w", op, err)
}
