// Package keystoretest provides Memory, an in-memory keystore.Store for
// tests of the code built on a Store, and Exercise, the conformance suite
// that every Store implementation must pass.
package keystoretest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

var _ keystore.Store = (*Memory)(nil)

// errClosed is returned by a Memory after Close.
var errClosed = errors.New("keystoretest: memory store is closed")

// Memory is an in-memory keystore.Store with the semantics of the real ones
// (version numbers are never reused, a duplicate name is ErrExists, ...)
// except that nothing is persisted and creation times come from the local
// clock; like a database it keeps times to the microsecond. Like the real
// stores it does not validate names, purposes or algorithms: that belongs to
// the caller. Watch callers are told of a change before the call that made
// it returns. It is safe for concurrent use. The zero value is not ready for
// use; call NewMemory.
type Memory struct {
	mu     sync.Mutex
	fail   error
	closed bool
	keys   map[[16]byte]*memKey
	byName map[string][16]byte
	hsmIDs map[string]bool

	// changed lists the keys changed since mu was locked; unlock tells
	// the watchers about them.
	changed   [][16]byte
	watchers  map[*watcher]struct{}
	exclusive map[string]bool
}

// memKey is a key and its versions, in ascending order.
type memKey struct {
	key      keystore.Key
	next     uint32
	versions []keystore.Version
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return &Memory{
		keys:      make(map[[16]byte]*memKey),
		byName:    make(map[string][16]byte),
		hsmIDs:    make(map[string]bool),
		watchers:  make(map[*watcher]struct{}),
		exclusive: make(map[string]bool),
	}
}

// Fail makes every later call return err (Close aside) until Recover, to
// simulate a failing database; pass an error wrapping
// keystore.ErrUnavailable for an outage. Running Watch calls return err, as
// if their connection had failed.
func (m *Memory) Fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
	if err != nil {
		m.stopWatchers(err)
	}
}

// Recover undoes Fail.
func (m *Memory) Recover() {
	m.Fail(nil)
}

// check returns the error a call must return instead of proceeding, if
// any. The caller holds m.mu.
func (m *Memory) check(ctx context.Context) error {
	switch {
	case m.fail != nil:
		return m.fail
	case m.closed:
		return errClosed
	case ctx.Err() != nil:
		return fmt.Errorf("keystoretest: %w", ctx.Err())
	}
	return nil
}

// now returns the current time as a database would store it.
func now() time.Time {
	return dbTime(time.Now())
}

// dbTime returns t as a database would store it: to the microsecond,
// without a monotonic clock reading; the zero time stays zero (NULL).
func dbTime(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Round(0).Truncate(time.Microsecond)
}

// unlock unlocks m.mu and then tells the watchers about the keys changed
// while it was held. Methods that change keys lock m.mu, call touch and
// defer unlock.
func (m *Memory) unlock() {
	ids := m.changed
	m.changed = nil
	watchers := slices.Collect(maps.Keys(m.watchers))
	m.mu.Unlock()
	for _, id := range ids {
		for _, w := range watchers {
			w.deliver(id)
		}
	}
}

// touch records that the key changed. The caller holds m.mu.
func (m *Memory) touch(keyID [16]byte) {
	m.changed = append(m.changed, keyID)
}

// notFound and conflict build the errors of a failed call.
func notFound(op string) error { return fmt.Errorf("keystoretest: %s: %w", op, keystore.ErrNotFound) }
func conflict(op string, v keystore.Version) error {
	return fmt.Errorf("keystoretest: %s: version %d is %s: %w", op, v.Version, v.State, keystore.ErrConflict)
}

// cloneKey and cloneVersion copy a key or version so that neither the caller
// nor the store can change the other's copy.
func cloneKey(k keystore.Key) keystore.Key {
	if len(k.Labels) == 0 {
		k.Labels = nil
	} else {
		k.Labels = maps.Clone(k.Labels)
	}
	return k
}

func cloneVersion(v keystore.Version) keystore.Version {
	v.HSMID = bytes.Clone(v.HSMID)
	v.PublicKey = bytes.Clone(v.PublicKey)
	return v
}

// CreateKey implements keystore.Store. If k.ID is zero it assigns a random
// one.
func (m *Memory) CreateKey(ctx context.Context, k keystore.Key, hsmID []byte) (keystore.Key, keystore.Version, error) {
	const op = "create key"
	m.mu.Lock()
	defer m.unlock()
	if err := m.check(ctx); err != nil {
		return keystore.Key{}, keystore.Version{}, err
	}
	if _, ok := m.byName[k.Name]; ok {
		return keystore.Key{}, keystore.Version{}, fmt.Errorf("keystoretest: %s %q: %w", op, k.Name, keystore.ErrExists)
	}
	if k.ID == ([16]byte{}) {
		if _, err := rand.Read(k.ID[:]); err != nil {
			return keystore.Key{}, keystore.Version{}, fmt.Errorf("keystoretest: %s: %w", op, err)
		}
		k.ID[6] = k.ID[6]&0x0f | 0x40 // UUID version 4
		k.ID[8] = k.ID[8]&0x3f | 0x80 // RFC 4122 variant
	}
	if _, ok := m.keys[k.ID]; ok {
		return keystore.Key{}, keystore.Version{}, fmt.Errorf("keystoretest: %s: duplicate key ID", op)
	}
	if err := m.checkHSMID(op, hsmID); err != nil {
		return keystore.Key{}, keystore.Version{}, err
	}
	if err := checkDurations(op, k.RotationPeriod, k.DestroyDelay, k.PublishLead); err != nil {
		return keystore.Key{}, keystore.Version{}, err
	}
	k = cloneKey(k)
	k.PrimaryVersion, k.StagedPrimary, k.PromoteTime = 0, 0, time.Time{}
	k.NextRotationTime = dbTime(k.NextRotationTime)
	k.CreateTime = now()
	v := keystore.Version{KeyID: k.ID, Version: 1, State: keystore.StatePending, HSMID: bytes.Clone(hsmID), CreateTime: k.CreateTime}
	m.keys[k.ID] = &memKey{key: k, next: 2, versions: []keystore.Version{v}}
	m.byName[k.Name] = k.ID
	m.hsmIDs[string(hsmID)] = true
	m.touch(k.ID)
	return cloneKey(k), cloneVersion(v), nil
}

// checkHSMID rejects an HSM identifier that is empty or already recorded,
// as the database's constraints do. Neither is a caller's mistake that a
// sentinel describes.
func (m *Memory) checkHSMID(op string, hsmID []byte) error {
	if len(hsmID) == 0 {
		return fmt.Errorf("keystoretest: %s: empty HSM ID", op)
	}
	if m.hsmIDs[string(hsmID)] {
		return fmt.Errorf("keystoretest: %s: duplicate HSM ID", op)
	}
	return nil
}

// GetKey implements keystore.Store.
func (m *Memory) GetKey(ctx context.Context, name string) (keystore.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return keystore.Key{}, err
	}
	id, ok := m.byName[name]
	if !ok {
		return keystore.Key{}, notFound("get key")
	}
	return cloneKey(m.keys[id].key), nil
}

// ListKeys implements keystore.Store. Names sort bytewise.
func (m *Memory) ListKeys(ctx context.Context, after string, limit int) ([]keystore.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	var names []string
	for name := range m.byName {
		if name > after {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, strings.Compare)
	var keys []keystore.Key
	for _, name := range names[:min(limit, len(names))] {
		keys = append(keys, cloneKey(m.keys[m.byName[name]].key))
	}
	return keys, nil
}

// AddVersion implements keystore.Store.
func (m *Memory) AddVersion(ctx context.Context, keyID [16]byte, hsmID []byte) (keystore.Version, error) {
	const op = "add version"
	m.mu.Lock()
	defer m.unlock()
	if err := m.check(ctx); err != nil {
		return keystore.Version{}, err
	}
	mk, ok := m.keys[keyID]
	if !ok {
		return keystore.Version{}, notFound(op)
	}
	if err := m.checkHSMID(op, hsmID); err != nil {
		return keystore.Version{}, err
	}
	v := keystore.Version{KeyID: keyID, Version: mk.next, State: keystore.StatePending, HSMID: bytes.Clone(hsmID), CreateTime: now()}
	mk.next++
	mk.versions = append(mk.versions, v)
	m.hsmIDs[string(hsmID)] = true
	m.touch(keyID)
	return cloneVersion(v), nil
}

// find returns the key and the index of its version, or ErrNotFound.
func (m *Memory) find(op string, keyID [16]byte, version uint32) (*memKey, int, error) {
	mk, ok := m.keys[keyID]
	if !ok {
		return nil, 0, notFound(op)
	}
	i, ok := slices.BinarySearchFunc(mk.versions, version, func(v keystore.Version, n uint32) int {
		return int(int64(v.Version) - int64(n))
	})
	if !ok {
		return nil, 0, notFound(op)
	}
	return mk, i, nil
}

// CommitVersion implements keystore.Store. It keeps its own copy of
// publicKey, an empty one as nil.
func (m *Memory) CommitVersion(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, primary bool) (keystore.Key, keystore.Version, error) {
	return m.commit(ctx, "commit version", keyID, version, publicKey, func(k *keystore.Key) {
		if primary && version > k.PrimaryVersion {
			k.PrimaryVersion = version
		}
		if primary && k.StagedPrimary <= k.PrimaryVersion {
			k.StagedPrimary, k.PromoteTime = 0, time.Time{}
		}
	})
}

// commit enables a pending version, keeps a copy of its public key and
// then runs then on the key, under the lock.
func (m *Memory) commit(ctx context.Context, op string, keyID [16]byte, version uint32, publicKey []byte, then func(k *keystore.Key)) (keystore.Key, keystore.Version, error) {
	m.mu.Lock()
	defer m.unlock()
	if err := m.check(ctx); err != nil {
		return keystore.Key{}, keystore.Version{}, err
	}
	mk, i, err := m.find(op, keyID, version)
	if err != nil {
		return keystore.Key{}, keystore.Version{}, err
	}
	v := &mk.versions[i]
	if v.State != keystore.StatePending {
		return keystore.Key{}, keystore.Version{}, conflict(op, *v)
	}
	v.State = keystore.StateEnabled
	if len(publicKey) > 0 {
		v.PublicKey = bytes.Clone(publicKey)
	}
	then(&mk.key)
	m.touch(keyID)
	return cloneKey(mk.key), cloneVersion(*v), nil
}

// AbortVersion implements keystore.Store.
func (m *Memory) AbortVersion(ctx context.Context, keyID [16]byte, version uint32) error {
	const op = "abort version"
	m.mu.Lock()
	defer m.unlock()
	if err := m.check(ctx); err != nil {
		return err
	}
	mk, i, err := m.find(op, keyID, version)
	if err != nil {
		return err
	}
	v := mk.versions[i]
	if v.State != keystore.StatePending {
		return conflict(op, v)
	}
	delete(m.hsmIDs, string(v.HSMID))
	mk.versions = slices.Delete(mk.versions, i, i+1)
	if len(mk.versions) == 0 {
		delete(m.keys, keyID)
		delete(m.byName, mk.key.Name)
	}
	m.touch(keyID)
	return nil
}

// GetVersion implements keystore.Store.
func (m *Memory) GetVersion(ctx context.Context, keyID [16]byte, version uint32) (keystore.Version, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return keystore.Version{}, err
	}
	mk, i, err := m.find("get version", keyID, version)
	if err != nil {
		return keystore.Version{}, err
	}
	return cloneVersion(mk.versions[i]), nil
}

// ListVersions implements keystore.Store.
func (m *Memory) ListVersions(ctx context.Context, keyID [16]byte, after uint32, limit int) ([]keystore.Version, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	mk, ok := m.keys[keyID]
	if !ok {
		return nil, notFound("list versions")
	}
	var out []keystore.Version
	for _, v := range mk.versions {
		if len(out) >= limit {
			break
		}
		if v.Version > after {
			out = append(out, cloneVersion(v))
		}
	}
	return out, nil
}

// ListPublicKeys implements keystore.Store. Names sort bytewise.
func (m *Memory) ListPublicKeys(ctx context.Context, keyName string) ([]keystore.PublicKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	var names []string
	if keyName == "" {
		names = slices.SortedFunc(maps.Keys(m.byName), strings.Compare)
	} else if _, ok := m.byName[keyName]; ok {
		names = []string{keyName}
	}
	var out []keystore.PublicKey
	for _, name := range names {
		mk := m.keys[m.byName[name]]
		if mk.key.Purpose != keystore.PurposeSignVerify {
			continue
		}
		for _, v := range mk.versions {
			if v.State != keystore.StateEnabled || v.PublicKey == nil {
				continue
			}
			out = append(out, keystore.PublicKey{
				KeyID:      mk.key.ID,
				KeyName:    mk.key.Name,
				Algorithm:  mk.key.Algorithm,
				Version:    v.Version,
				DER:        bytes.Clone(v.PublicKey),
				CreateTime: v.CreateTime,
			})
		}
	}
	return out, nil
}

// Ping implements keystore.Store: it fails only under Fail or after Close.
func (m *Memory) Ping(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.check(ctx)
}

// Close implements keystore.Store. Later calls fail, and running Watch
// calls return.
func (m *Memory) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.stopWatchers(errClosed)
}
