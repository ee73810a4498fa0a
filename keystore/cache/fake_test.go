package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// errFake is returned by the fake's methods that the tests do not use.
var errFake = errors.New("fake: not implemented")

// event is a notification for fake.Watch to deliver; done is closed once
// changed has returned.
type event struct {
	id   [16]byte
	done chan struct{}
}

// fake is a minimal keystore.Store for the cache tests. It counts calls,
// lets a test block GetKey, and has a Watch that the test drives.
type fake struct {
	mu       sync.Mutex
	keys     map[string]keystore.Key
	versions map[[16]byte]map[uint32]keystore.Version
	calls    map[string]int
	// blockGetKey, if set, is called by GetKey after reading the key and
	// before returning it.
	blockGetKey func()
	// watchErr, if set, makes Watch return it at once, without calling
	// changed.
	watchErr error
	closed   bool

	events   chan event    // delivered by Watch
	breaks   chan error    // makes the running Watch return the error
	watching chan struct{} // receives after Watch's changed(zero) returns
	attempts chan struct{} // receives at the start of each Watch call
	active   int           // Watch calls running
}

var _ keystore.Store = (*fake)(nil)

func newFake() *fake {
	return &fake{
		keys:     make(map[string]keystore.Key),
		versions: make(map[[16]byte]map[uint32]keystore.Version),
		calls:    make(map[string]int),
		events:   make(chan event),
		breaks:   make(chan error),
		watching: make(chan struct{}, 100),
		attempts: make(chan struct{}, 100),
	}
}

// put stores k and its versions, replacing what was there.
func (f *fake) put(k keystore.Key, vs ...keystore.Version) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[k.Name] = k
	if f.versions[k.ID] == nil {
		f.versions[k.ID] = make(map[uint32]keystore.Version)
	}
	for _, v := range vs {
		f.versions[k.ID][v.Version] = v
	}
}

// count returns the number of calls to method.
func (f *fake) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *fake) enter(method string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
}

func (f *fake) GetKey(ctx context.Context, name string) (keystore.Key, error) {
	f.mu.Lock()
	f.calls["GetKey"]++
	k, ok := f.keys[name]
	block := f.blockGetKey
	f.mu.Unlock()
	if block != nil {
		block()
	}
	if !ok {
		return keystore.Key{}, fmt.Errorf("fake: key %q: %w", name, keystore.ErrNotFound)
	}
	return k, nil
}

func (f *fake) GetVersion(ctx context.Context, keyID [16]byte, version uint32) (keystore.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["GetVersion"]++
	v, ok := f.versions[keyID][version]
	if !ok {
		return keystore.Version{}, fmt.Errorf("fake: version %d: %w", version, keystore.ErrNotFound)
	}
	return v, nil
}

// UpdateKey sets the key's RotationPeriod, the one field the tests change.
func (f *fake) UpdateKey(ctx context.Context, keyID [16]byte, u keystore.KeyUpdate) (keystore.Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["UpdateKey"]++
	for name, k := range f.keys {
		if k.ID == keyID {
			if u.RotationPeriod != nil {
				k.RotationPeriod = *u.RotationPeriod
			}
			f.keys[name] = k
			return k, nil
		}
	}
	return keystore.Key{}, fmt.Errorf("fake: key %x: %w", keyID, keystore.ErrNotFound)
}

// SetVersionState changes the state, and fails with ErrConflict if the
// version is not in t.From.
func (f *fake) SetVersionState(ctx context.Context, keyID [16]byte, version uint32, t keystore.Transition) (keystore.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["SetVersionState"]++
	v, ok := f.versions[keyID][version]
	if !ok {
		return keystore.Version{}, fmt.Errorf("fake: version %d: %w", version, keystore.ErrNotFound)
	}
	allowed := false
	for _, s := range t.From {
		allowed = allowed || s == v.State
	}
	if !allowed {
		return keystore.Version{}, fmt.Errorf("fake: version %d is %s: %w", version, v.State, keystore.ErrConflict)
	}
	v.State = t.To
	f.versions[keyID][version] = v
	return v, nil
}

// Watch reports a connection with changed(zero ID), then delivers events
// until ctx ends or a test breaks it.
func (f *fake) Watch(ctx context.Context, changed func(keyID [16]byte)) error {
	f.mu.Lock()
	f.calls["Watch"]++
	f.active++
	werr := f.watchErr
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active--
		f.mu.Unlock()
	}()
	signal(f.attempts)
	if werr != nil {
		return werr
	}
	changed([16]byte{})
	signal(f.watching)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-f.breaks:
			return err
		case e := <-f.events:
			changed(e.id)
			close(e.done)
		}
	}
}

// signal sends on the buffered ch unless it is full: a test that waits for
// a signal needs only one, and an unread one must not block the watcher.
func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// setWatchErr sets the error that the next Watch calls return at once.
func (f *fake) setWatchErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchErr = err
}

// setBlockGetKey sets the function GetKey calls before returning.
func (f *fake) setBlockGetKey(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blockGetKey = fn
}

// state reports whether Close was called and how many Watch calls are
// running.
func (f *fake) state() (closed bool, watching int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed, f.active
}

func (f *fake) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

func (f *fake) CreateKey(ctx context.Context, k keystore.Key, hsmID []byte) (keystore.Key, keystore.Version, error) {
	f.enter("CreateKey")
	return keystore.Key{}, keystore.Version{}, errFake
}

func (f *fake) ListKeys(ctx context.Context, after string, limit int) ([]keystore.Key, error) {
	f.enter("ListKeys")
	return nil, errFake
}

func (f *fake) AddVersion(ctx context.Context, keyID [16]byte, hsmID []byte) (keystore.Version, error) {
	f.enter("AddVersion")
	return keystore.Version{}, errFake
}

func (f *fake) CommitVersion(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, primary bool) (keystore.Key, keystore.Version, error) {
	f.enter("CommitVersion")
	return keystore.Key{}, keystore.Version{}, errFake
}

func (f *fake) CommitStaged(ctx context.Context, keyID [16]byte, version uint32, publicKey []byte, promoteTime time.Time) (keystore.Key, keystore.Version, error) {
	f.enter("CommitStaged")
	return keystore.Key{}, keystore.Version{}, errFake
}

func (f *fake) AbortVersion(ctx context.Context, keyID [16]byte, version uint32) error {
	f.enter("AbortVersion")
	return errFake
}

func (f *fake) ListVersions(ctx context.Context, keyID [16]byte, after uint32, limit int) ([]keystore.Version, error) {
	f.enter("ListVersions")
	return nil, errFake
}

// ListPublicKeys returns a listing with one entry per matching key; the
// cache tests count calls, not contents.
func (f *fake) ListPublicKeys(ctx context.Context, keyName string) ([]keystore.PublicKey, error) {
	f.enter("ListPublicKeys")
	return []keystore.PublicKey{{KeyName: keyName, Version: 1, DER: []byte{0x30}}}, nil
}

func (f *fake) StagePrimary(ctx context.Context, keyID [16]byte, version uint32, promoteTime time.Time) (keystore.Key, error) {
	f.enter("StagePrimary")
	return keystore.Key{}, errFake
}

func (f *fake) PromoteDue(ctx context.Context, now time.Time) ([]keystore.Key, error) {
	f.enter("PromoteDue")
	return nil, errFake
}

func (f *fake) ListVersionsByState(ctx context.Context, state keystore.State, dueBy time.Time, limit int) ([]keystore.Version, error) {
	f.enter("ListVersionsByState")
	return nil, errFake
}

func (f *fake) ListDueRotations(ctx context.Context, now time.Time, limit int) ([]keystore.Key, error) {
	f.enter("ListDueRotations")
	return nil, errFake
}

func (f *fake) ClaimRotation(ctx context.Context, keyID [16]byte, now, next time.Time) (bool, error) {
	f.enter("ClaimRotation")
	return false, errFake
}

func (f *fake) ReserveEncryptions(ctx context.Context, keyID [16]byte, version uint32, n int64) (int64, error) {
	f.enter("ReserveEncryptions")
	return 0, errFake
}

func (f *fake) RunExclusive(ctx context.Context, name string, fn func(ctx context.Context) error) (bool, error) {
	f.enter("RunExclusive")
	return false, errFake
}

func (f *fake) Ping(ctx context.Context) error {
	f.enter("Ping")
	return nil
}
