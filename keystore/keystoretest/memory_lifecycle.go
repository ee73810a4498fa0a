package keystoretest

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// checkDurations rejects negative durations, as the database's constraints
// do. That is the caller's bug, not something a sentinel describes.
func checkDurations(op string, ds ...time.Duration) error {
	for _, d := range ds {
		if d < 0 {
			return fmt.Errorf("keystoretest: %s: negative duration %v", op, d)
		}
	}
	return nil
}

// validStates are the states the database accepts.
var validStates = []keystore.State{
	keystore.StatePending, keystore.StateEnabled, keystore.StateDisabled,
	keystore.StateDestroyScheduled, keystore.StateDestroyed,
}

// UpdateKey implements keystore.Store.
func (m *Memory) UpdateKey(ctx context.Context, keyID [16]byte, u keystore.KeyUpdate) (keystore.Key, error) {
	const op = "update key"
	m.mu.Lock()
	defer m.unlock()
	if err := m.check(ctx); err != nil {
		return keystore.Key{}, err
	}
	mk, ok := m.keys[keyID]
	if !ok {
		return keystore.Key{}, notFound(op)
	}
	k := mk.key
	if u.RotationPeriod != nil {
		k.RotationPeriod = *u.RotationPeriod
	}
	if u.NextRotationTime != nil {
		k.NextRotationTime = dbTime(*u.NextRotationTime)
	}
	if u.DestroyDelay != nil {
		k.DestroyDelay = *u.DestroyDelay
	}
	if u.PublishLead != nil {
		k.PublishLead = *u.PublishLead
	}
	if err := checkDurations(op, k.RotationPeriod, k.DestroyDelay, k.PublishLead); err != nil {
		return keystore.Key{}, err
	}
	mk.key = k
	m.touch(keyID)
	return cloneKey(k), nil
}

// StagePrimary implements keystore.Store. An unknown version is
// ErrNotFound.
func (m *Memory) StagePrimary(ctx context.Context, keyID [16]byte, version uint32, promoteTime time.Time) (keystore.Key, error) {
	const op = "stage primary"
	m.mu.Lock()
	defer m.unlock()
	if err := m.check(ctx); err != nil {
		return keystore.Key{}, err
	}
	mk, i, err := m.find(op, keyID, version)
	if err != nil {
		return keystore.Key{}, err
	}
	if v := mk.versions[i]; v.State != keystore.StateEnabled {
		return keystore.Key{}, conflict(op, v)
	}
	if version <= max(mk.key.PrimaryVersion, mk.key.StagedPrimary) {
		return cloneKey(mk.key), nil
	}
	if promoteTime.IsZero() {
		// The database's constraint: a staged primary has a time.
		return keystore.Key{}, fmt.Errorf("keystoretest: %s: zero promote time", op)
	}
	mk.key.StagedPrimary, mk.key.PromoteTime = version, dbTime(promoteTime)
	m.touch(keyID)
	return cloneKey(mk.key), nil
}

// PromoteDue implements keystore.Store. A due staged primary that is no
// longer enabled, or no longer higher than the primary, is dropped. The
// keys are returned ordered by ID.
func (m *Memory) PromoteDue(ctx context.Context, now time.Time) ([]keystore.Key, error) {
	m.mu.Lock()
	defer m.unlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	now = dbTime(now)
	var out []keystore.Key
	for _, id := range slices.SortedFunc(maps.Keys(m.keys), compareIDs) {
		mk := m.keys[id]
		k := &mk.key
		if k.StagedPrimary == 0 || k.PromoteTime.After(now) {
			continue
		}
		if _, i, err := m.find("", id, k.StagedPrimary); err == nil &&
			mk.versions[i].State == keystore.StateEnabled && k.StagedPrimary > k.PrimaryVersion {
			k.PrimaryVersion = k.StagedPrimary
		}
		k.StagedPrimary, k.PromoteTime = 0, time.Time{}
		m.touch(id)
		out = append(out, cloneKey(*k))
	}
	return out, nil
}

// compareIDs orders key IDs bytewise, as Postgres orders uuids.
func compareIDs(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) }

// SetVersionState implements keystore.Store.
func (m *Memory) SetVersionState(ctx context.Context, keyID [16]byte, version uint32, t keystore.Transition) (keystore.Version, error) {
	const op = "set version state"
	m.mu.Lock()
	defer m.unlock()
	if err := m.check(ctx); err != nil {
		return keystore.Version{}, err
	}
	mk, i, err := m.find(op, keyID, version)
	if err != nil {
		return keystore.Version{}, err
	}
	v := &mk.versions[i]
	if !slices.Contains(t.From, v.State) {
		return keystore.Version{}, conflict(op, *v)
	}
	if t.NotPrimary && (version == mk.key.PrimaryVersion || version == mk.key.StagedPrimary) {
		return keystore.Version{}, fmt.Errorf("keystoretest: %s: version %d is the primary or staged primary: %w", op, version, keystore.ErrConflict)
	}
	if !t.DueBy.IsZero() && (v.DestroyTime.IsZero() || v.DestroyTime.After(dbTime(t.DueBy))) {
		return keystore.Version{}, fmt.Errorf("keystoretest: %s: version %d is not due: %w", op, version, keystore.ErrConflict)
	}
	// The database's constraints.
	if !slices.Contains(validStates, t.To) || (t.To == keystore.StatePending && v.PublicKey != nil) {
		return keystore.Version{}, fmt.Errorf("keystoretest: %s: invalid state %q", op, t.To)
	}
	v.State, v.DestroyTime = t.To, dbTime(t.DestroyTime)
	m.touch(keyID)
	return cloneVersion(*v), nil
}

// ListVersionsByState implements keystore.Store. Versions are ordered by
// creation time, key ID and version.
func (m *Memory) ListVersionsByState(ctx context.Context, state keystore.State, dueBy time.Time, limit int) ([]keystore.Version, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	dueBy = dbTime(dueBy)
	var out []keystore.Version
	for _, mk := range m.keys {
		for _, v := range mk.versions {
			if v.State != state {
				continue
			}
			if !dueBy.IsZero() && (v.DestroyTime.IsZero() || v.DestroyTime.After(dueBy)) {
				continue
			}
			out = append(out, cloneVersion(v))
		}
	}
	slices.SortFunc(out, func(a, b keystore.Version) int {
		if c := a.CreateTime.Compare(b.CreateTime); c != 0 {
			return c
		}
		if c := compareIDs(a.KeyID, b.KeyID); c != 0 {
			return c
		}
		return int(int64(a.Version) - int64(b.Version))
	})
	return out[:max(0, min(limit, len(out)))], nil
}

// ListDueRotations implements keystore.Store. Keys are ordered by next
// rotation time and ID.
func (m *Memory) ListDueRotations(ctx context.Context, now time.Time, limit int) ([]keystore.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	now = dbTime(now)
	var out []keystore.Key
	for _, mk := range m.keys {
		if t := mk.key.NextRotationTime; !t.IsZero() && !t.After(now) {
			out = append(out, cloneKey(mk.key))
		}
	}
	slices.SortFunc(out, func(a, b keystore.Key) int {
		if c := a.NextRotationTime.Compare(b.NextRotationTime); c != 0 {
			return c
		}
		return compareIDs(a.ID, b.ID)
	})
	return out[:max(0, min(limit, len(out)))], nil
}

// ClaimRotation implements keystore.Store. An unknown key is not claimed,
// without error.
func (m *Memory) ClaimRotation(ctx context.Context, keyID [16]byte, now, next time.Time) (bool, error) {
	m.mu.Lock()
	defer m.unlock()
	if err := m.check(ctx); err != nil {
		return false, err
	}
	mk, ok := m.keys[keyID]
	if !ok {
		return false, nil
	}
	if t := mk.key.NextRotationTime; t.IsZero() || t.After(dbTime(now)) {
		return false, nil
	}
	mk.key.NextRotationTime = dbTime(next)
	m.touch(keyID)
	return true, nil
}

// ReserveEncryptions implements keystore.Store. Like the database, it
// refuses a count that would be negative or overflow.
func (m *Memory) ReserveEncryptions(ctx context.Context, keyID [16]byte, version uint32, n int64) (int64, error) {
	const op = "reserve encryptions"
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return 0, err
	}
	mk, i, err := m.find(op, keyID, version)
	if err != nil {
		return 0, err
	}
	v := &mk.versions[i]
	if (n > 0 && v.EncryptCount > math.MaxInt64-n) || v.EncryptCount+n < 0 {
		return 0, fmt.Errorf("keystoretest: %s: count %d%+d out of range", op, v.EncryptCount, n)
	}
	v.EncryptCount += n
	return v.EncryptCount, nil
}

// CommitStaged implements keystore.Store.
func (m *Memory) CommitStaged(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, promoteTime time.Time) (keystore.Key, keystore.Version, error) {
	if promoteTime.IsZero() {
		return keystore.Key{}, keystore.Version{}, fmt.Errorf("keystoretest: commit staged: zero promote time")
	}
	return m.commit(ctx, "commit staged", keyID, version, publicKey, func(k *keystore.Key) {
		if version > max(k.PrimaryVersion, k.StagedPrimary) {
			k.StagedPrimary, k.PromoteTime = version, dbTime(promoteTime)
		}
	})
}
