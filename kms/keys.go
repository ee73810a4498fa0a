package kms

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/keystore"
)

// Defaults and bounds of key settings.
const (
	DefaultDestroyDelay = 30 * 24 * time.Hour
	DefaultPublishLead  = 10 * time.Minute
	minDestroyDelay     = time.Minute
	minRotationPeriod   = time.Minute
	maxSetting          = 100 * 365 * 24 * time.Hour
)

// CreateKeyRequest holds the fields of a new key. Zero settings take their
// defaults; a zero RotationPeriod means no scheduled rotation.
type CreateKeyRequest struct {
	Name           string
	Algorithm      keystore.Algorithm
	Labels         map[string]string
	RotationPeriod time.Duration
	DestroyDelay   time.Duration
	PublishLead    time.Duration
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
	if req.DestroyDelay == 0 {
		req.DestroyDelay = DefaultDestroyDelay
	}
	if req.PublishLead == 0 {
		req.PublishLead = DefaultPublishLead
	}
	if err := checkSettings(alg.purpose, req.RotationPeriod, req.DestroyDelay, req.PublishLead); err != nil {
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
	k := keystore.Key{
		ID: id, Name: req.Name, Purpose: alg.purpose, Algorithm: req.Algorithm, Labels: req.Labels,
		RotationPeriod: req.RotationPeriod, DestroyDelay: req.DestroyDelay, PublishLead: req.PublishLead,
	}
	if req.RotationPeriod > 0 {
		k.NextRotationTime = s.now().Add(req.RotationPeriod)
	}
	k, v, err := s.store.CreateKey(ctx, k, hsmID)
	if errors.Is(err, keystore.ErrExists) {
		return keystore.Key{}, newError(ErrAlreadyExists, "key already exists")
	}
	if err != nil {
		return keystore.Key{}, internal("create key", err)
	}
	k, _, err = s.makeVersion(ctx, k, v, time.Time{})
	return k, err
}

// MinPublishLead is the shortest non-zero publish lead: the JWKS max-age,
// so that verifiers' cached key sets hold a new version before any token
// carries its kid.
const MinPublishLead = 5 * time.Minute

// checkSettings validates a key's rotation period, destroy delay and
// publish lead.
func checkSettings(purpose keystore.Purpose, rotation, destroy, lead time.Duration) error {
	switch {
	case lead != 0 && lead < MinPublishLead:
		return newError(ErrInvalidArgument, "publish lead must be 0 or at least %v (the JWKS max-age)", MinPublishLead)
	case purpose == keystore.PurposeSignVerify && rotation != 0 && rotation <= lead:
		return newError(ErrInvalidArgument, "rotation period must be longer than the publish lead")
	case rotation != 0 && (rotation < minRotationPeriod || rotation > maxSetting):
		return newError(ErrInvalidArgument, "rotation period must be 0 or between 1 minute and 100 years")
	case destroy < minDestroyDelay || destroy > maxSetting:
		return newError(ErrInvalidArgument, "destroy delay must be between 1 minute and 100 years")
	case lead < 0 || lead > maxSetting:
		return newError(ErrInvalidArgument, "publish lead must be between 0 and 100 years")
	}
	return nil
}

// makeVersion generates the HSM object of a pending version and commits it:
// as the key's primary when stageUntil is zero, else staged to become
// primary at stageUntil. If the HSM object cannot be made, whatever the
// module may have left under its ID is destroyed (if the HSM answers) and
// the pending row is removed again, so no row points at a missing object;
// if the commit fails, the version stays pending and Reconcile
// removes it and its object later.
func (s *Service) makeVersion(ctx context.Context, k keystore.Key, v keystore.Version, stageUntil time.Time) (keystore.Key, keystore.Version, error) {
	s.failpoint("version:pending")
	spec := hsm.KeySpec{ID: v.HSMID, Label: hsmLabel(k.ID, v.Version), Type: algorithms[k.Algorithm].keyType}
	pub, err := s.hsm.GenerateKey(ctx, spec)
	var der []byte
	if err == nil && pub != nil {
		der, err = x509.MarshalPKIXPublicKey(pub)
	}
	if err != nil {
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		defer cancel()
		// A failed GenerateKey may still have made the object (the
		// module failed after creating it): destroy it by its ID
		// whatever the error. If the HSM cannot even do that, the row
		// goes all the same, so that the name is free again; an object
		// may then be left without a row.
		if derr := s.hsm.Destroy(cleanupCtx, v.HSMID); derr != nil && !errors.Is(derr, hsm.ErrNotFound) {
			err = errors.Join(err, derr)
		}
		if aerr := s.store.AbortVersion(cleanupCtx, k.ID, v.Version); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return keystore.Key{}, keystore.Version{}, internal("generate key", err)
	}
	s.failpoint("version:hsm")
	// The HSM object exists now: record it even if the caller has gone
	// away, so that the key is never left half-made.
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if stageUntil.IsZero() {
		k, v, err = s.store.CommitVersion(commitCtx, k.ID, v.Version, der, true)
	} else {
		k, v, err = s.store.CommitStaged(commitCtx, k.ID, v.Version, der, stageUntil)
	}
	if errors.Is(err, keystore.ErrNotFound) {
		// Reconcile gave the version up as abandoned; its object is ours
		// to remove.
		err = errors.Join(err, s.hsm.Destroy(commitCtx, spec.ID))
	}
	if err != nil {
		return keystore.Key{}, keystore.Version{}, internal("commit version", err)
	}
	s.failpoint("version:commit")
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

// Primary returns the version that encrypts or signs new data now: the
// staged primary once its promotion time has come (even before the
// scheduler records the promotion), else the primary.
func (s *Service) Primary(k keystore.Key) uint32 {
	if k.StagedPrimary > k.PrimaryVersion && !s.now().Before(k.PromoteTime) {
		return k.StagedPrimary
	}
	return k.PrimaryVersion
}

// ListKeys returns up to pageSize keys (0 means the default) after the
// page token, and the token of the next page, empty on the last one. If
// visible is not nil, only keys it accepts are listed, and the page token
// names only a listed key, so that paging reveals no other name.
func (s *Service) ListKeys(ctx context.Context, size int32, token string, visible func(name string) bool) ([]keystore.Key, string, error) {
	n, err := pageSize(size)
	if err != nil {
		return nil, "", err
	}
	after, err := parseNameToken(token)
	if err != nil {
		return nil, "", err
	}
	var out []keystore.Key
	for {
		keys, err := s.store.ListKeys(ctx, after, n+1)
		if err != nil {
			return nil, "", internal("list keys", err)
		}
		for _, k := range keys {
			if visible != nil && !visible(k.Name) {
				continue
			}
			if len(out) == n {
				// One more visible key exists: this page is full.
				return out, nameToken(out[n-1].Name), nil
			}
			out = append(out, k)
		}
		if len(keys) <= n {
			return out, "", nil
		}
		after = keys[len(keys)-1].Name
	}
}

// RotateKey creates a new version of the key. An encryption key's new
// version is primary at once. A signing key's new version is enabled (and
// so published in JWKS) at once but becomes primary only after the key's
// publish lead, unless immediate is set. Older versions stay enabled.
func (s *Service) RotateKey(ctx context.Context, name string, immediate bool) (keystore.Version, error) {
	k, err := s.GetKey(ctx, name)
	if err != nil {
		return keystore.Version{}, err
	}
	_, v, err := s.rotate(ctx, k, immediate)
	return v, err
}

// rotate makes a new version of k, staged or primary at once.
func (s *Service) rotate(ctx context.Context, k keystore.Key, immediate bool) (keystore.Key, keystore.Version, error) {
	hsmID, err := s.newHSMID()
	if err != nil {
		return keystore.Key{}, keystore.Version{}, err
	}
	v, err := s.store.AddVersion(ctx, k.ID, hsmID)
	if errors.Is(err, keystore.ErrNotFound) {
		return keystore.Key{}, keystore.Version{}, newError(ErrNotFound, "key not found")
	}
	if err != nil {
		return keystore.Key{}, keystore.Version{}, internal("add version", err)
	}
	var stageUntil time.Time
	if k.Purpose == keystore.PurposeSignVerify && !immediate && k.PublishLead > 0 {
		stageUntil = s.now().Add(k.PublishLead)
	}
	return s.makeVersion(ctx, k, v, stageUntil)
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
