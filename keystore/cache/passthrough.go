package cache

import (
	"context"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// Every change made through the Store drops the entries of the key it
// touched once the wrapped Store returns, whether it succeeded or not: a
// failed call may still have committed.

// CreateKey creates the key in the wrapped Store and drops any entry cached
// under its name or ID.
func (c *Store) CreateKey(ctx context.Context, k keystore.Key, hsmID []byte) (keystore.Key, keystore.Version, error) {
	nk, v, err := c.s.CreateKey(ctx, k, hsmID)
	c.invalidateName(k.Name)
	if k.ID != ([16]byte{}) {
		c.invalidate(k.ID)
	}
	if err == nil && nk.ID != k.ID {
		c.invalidate(nk.ID)
	}
	return nk, v, err
}

// invalidateName drops the key cached under name, if any.
func (c *Store) invalidateName(name string) {
	c.mu.RLock()
	k, ok := c.byName[name]
	c.mu.RUnlock()
	if ok {
		c.invalidate(k.ID)
	}
}

// AddVersion passes through and drops the key's entries.
func (c *Store) AddVersion(ctx context.Context, keyID [16]byte, hsmID []byte) (keystore.Version, error) {
	defer c.invalidate(keyID)
	return c.s.AddVersion(ctx, keyID, hsmID)
}

// CommitVersion passes through and drops the key's entries.
func (c *Store) CommitVersion(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, primary bool) (keystore.Key, keystore.Version, error) {
	defer c.invalidate(keyID)
	return c.s.CommitVersion(ctx, keyID, version, publicKey, primary)
}

// AbortVersion passes through and drops the key's entries.
func (c *Store) AbortVersion(ctx context.Context, keyID [16]byte, version uint32) error {
	defer c.invalidate(keyID)
	return c.s.AbortVersion(ctx, keyID, version)
}

// UpdateKey passes through and drops the key's entries.
func (c *Store) UpdateKey(ctx context.Context, keyID [16]byte, u keystore.KeyUpdate) (keystore.Key, error) {
	defer c.invalidate(keyID)
	return c.s.UpdateKey(ctx, keyID, u)
}

// StagePrimary passes through and drops the key's entries.
func (c *Store) StagePrimary(ctx context.Context, keyID [16]byte, version uint32, promoteTime time.Time) (keystore.Key, error) {
	defer c.invalidate(keyID)
	return c.s.StagePrimary(ctx, keyID, version, promoteTime)
}

// CommitStaged passes through and drops the key's entries.
func (c *Store) CommitStaged(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, promoteTime time.Time) (keystore.Key, keystore.Version, error) {
	defer c.invalidate(keyID)
	return c.s.CommitStaged(ctx, keyID, version, publicKey, promoteTime)
}

// PromoteDue passes through and drops the entries of the keys it changed,
// or every entry if it failed, since it may have changed any key.
func (c *Store) PromoteDue(ctx context.Context, now time.Time) ([]keystore.Key, error) {
	keys, err := c.s.PromoteDue(ctx, now)
	if err != nil {
		c.dropAll()
		return keys, err
	}
	for _, k := range keys {
		c.invalidate(k.ID)
	}
	return keys, nil
}

// SetVersionState passes through and drops the key's entries.
func (c *Store) SetVersionState(ctx context.Context, keyID [16]byte, version uint32, t keystore.Transition) (keystore.Version, error) {
	defer c.invalidate(keyID)
	return c.s.SetVersionState(ctx, keyID, version, t)
}

// ClaimRotation passes through and drops the key's entries.
func (c *Store) ClaimRotation(ctx context.Context, keyID [16]byte, now, next time.Time) (bool, error) {
	defer c.invalidate(keyID)
	return c.s.ClaimRotation(ctx, keyID, now, next)
}

// ReserveEncryptions passes through and keeps the cache: it changes only
// EncryptCount, which callers read from its result, never from a cached
// Version (whose EncryptCount may lag). Dropping the key here would send
// the next request of every batch to the database.
func (c *Store) ReserveEncryptions(ctx context.Context, keyID [16]byte, version uint32, n int64) (int64, error) {
	return c.s.ReserveEncryptions(ctx, keyID, version, n)
}

// ListKeys passes through.
func (c *Store) ListKeys(ctx context.Context, after string, limit int) ([]keystore.Key, error) {
	return c.s.ListKeys(ctx, after, limit)
}

// ListVersions passes through.
func (c *Store) ListVersions(ctx context.Context, keyID [16]byte, after uint32, limit int) ([]keystore.Version, error) {
	return c.s.ListVersions(ctx, keyID, after, limit)
}

// ListVersionsByState passes through.
func (c *Store) ListVersionsByState(ctx context.Context, state keystore.State, dueBy time.Time, limit int) ([]keystore.Version, error) {
	return c.s.ListVersionsByState(ctx, state, dueBy, limit)
}

// ListDueRotations passes through.
func (c *Store) ListDueRotations(ctx context.Context, now time.Time, limit int) ([]keystore.Key, error) {
	return c.s.ListDueRotations(ctx, now, limit)
}

// Watch passes through to the wrapped Store.
func (c *Store) Watch(ctx context.Context, changed func(keyID [16]byte)) error {
	return c.s.Watch(ctx, changed)
}

// RunExclusive passes through.
func (c *Store) RunExclusive(ctx context.Context, name string, fn func(ctx context.Context) error) (bool, error) {
	return c.s.RunExclusive(ctx, name, fn)
}

// Ping passes through.
func (c *Store) Ping(ctx context.Context) error {
	return c.s.Ping(ctx)
}
