// Package cache provides Store, a keystore.Store decorator that keeps keys
// and versions in process so that the request path looks them up without a
// database round trip.
//
// Entries are dropped when a change is made through the Store, when the
// wrapped Store's Watch reports a change from any replica, and every
// Options.Refresh as a safety net. The cache fails closed: while Watch is not
// delivering notifications, every read goes to the wrapped Store and nothing
// is cached, so that a version disabled on another replica is never used
// from a stale entry.
package cache

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// DefaultRefresh is the Refresh used when Options.Refresh is zero.
const DefaultRefresh = 30 * time.Second

// Backoff bounds for restarting a failed Watch: the first retry waits
// minBackoff, and each failure in a row doubles the wait up to maxBackoff.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Options configures a Store.
type Options struct {
	// Refresh is how often every entry is dropped, whatever the
	// notifications say; zero means DefaultRefresh.
	Refresh time.Duration
	// Logger receives watcher failures; nil means slog.Default().
	Logger *slog.Logger
}

// Stats counts what a Store's cache did since it was made.
type Stats struct {
	// Hits is the number of GetKey and GetVersion calls served from the
	// cache.
	Hits uint64
	// Misses is the number of such calls that went to the wrapped Store
	// while the cache was in use.
	Misses uint64
	// Bypasses is the number of such calls that went to the wrapped Store
	// because the watcher was not connected.
	Bypasses uint64
	// Invalidations is the number of times entries were dropped: for one
	// key, or all at once.
	Invalidations uint64
}

// Store is a keystore.Store that caches GetKey and GetVersion results of the
// Store it wraps. Every other method passes through. Values it returns are
// copies that the caller may modify.
//
// A cached Version's EncryptCount may lag behind the database; use the count
// that ReserveEncryptions returns.
type Store struct {
	s   keystore.Store
	log *slog.Logger

	mu        sync.RWMutex
	connected bool                // the watcher is receiving notifications
	gen       uint64              // bumped by every invalidation
	dropGen   uint64              // gen at the last drop of everything
	keyGen    map[[16]byte]uint64 // gen at the last invalidation of a key
	byName    map[string]keystore.Key
	names     map[[16]byte]string // the name under which a key ID is cached
	versions  map[[16]byte]map[uint32]keystore.Version
	// publics holds ListPublicKeys results by key name ("" for every
	// signing key); any invalidation drops them all.
	publics map[string][]keystore.PublicKey

	hits, misses, bypasses, invalidations atomic.Uint64

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var _ keystore.Store = (*Store)(nil)

// config holds what tests may change about a Store.
type config struct {
	tick       <-chan time.Time // drops everything on each receive
	stopTick   func()           // called when the Store stops; may be nil
	minBackoff time.Duration
	maxBackoff time.Duration
}

// New returns a Store that caches s and watches s for changes until ctx ends
// or Close is called. The Store owns s: Close closes it. Until the watcher
// has connected, reads pass through to s.
func New(ctx context.Context, s keystore.Store, opts Options) *Store {
	refresh := opts.Refresh
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	ticker := time.NewTicker(refresh)
	return newStore(ctx, s, opts, config{
		tick: ticker.C, stopTick: ticker.Stop,
		minBackoff: minBackoff, maxBackoff: maxBackoff,
	})
}

// newStore is New with the timing taken from cfg.
func newStore(ctx context.Context, s keystore.Store, opts Options, cfg config) *Store {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Store{
		s:        s,
		log:      log,
		keyGen:   make(map[[16]byte]uint64),
		byName:   make(map[string]keystore.Key),
		names:    make(map[[16]byte]string),
		versions: make(map[[16]byte]map[uint32]keystore.Version),
		publics:  make(map[string][]keystore.PublicKey),
	}
	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.watch(ctx, cfg.minBackoff, cfg.maxBackoff)
	}()
	go func() {
		defer c.wg.Done()
		if cfg.stopTick != nil {
			defer cfg.stopTick()
		}
		c.refresh(ctx, cfg.tick)
	}()
	return c
}

// Close stops the watcher, waits for it to return and closes the wrapped
// Store. Like keystore.Store's Close, it must not run concurrently with
// other methods; calling it again does nothing.
func (c *Store) Close() {
	c.closeOnce.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.s.Close()
	})
}

// Stats returns the cache's counters.
func (c *Store) Stats() Stats {
	return Stats{
		Hits:          c.hits.Load(),
		Misses:        c.misses.Load(),
		Bypasses:      c.bypasses.Load(),
		Invalidations: c.invalidations.Load(),
	}
}

// GetKey returns the key named name, from the cache if it is there and the
// watcher is connected.
func (c *Store) GetKey(ctx context.Context, name string) (keystore.Key, error) {
	c.mu.RLock()
	k, ok := c.byName[name]
	connected := c.connected
	start := c.gen
	c.mu.RUnlock()
	if c.served(ok, connected) {
		return copyKey(k), nil
	}
	k, err := c.s.GetKey(ctx, name)
	if err != nil || !connected {
		return k, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fresh(k.ID, start) {
		if old, ok := c.names[k.ID]; ok && old != name {
			delete(c.byName, old) // the key was renamed
		}
		c.byName[name] = copyKey(k)
		c.names[k.ID] = name
	}
	return k, nil
}

// GetVersion returns one version of a key, from the cache if it is there and
// the watcher is connected.
func (c *Store) GetVersion(ctx context.Context, keyID [16]byte, version uint32) (keystore.Version, error) {
	c.mu.RLock()
	v, ok := c.versions[keyID][version]
	connected := c.connected
	start := c.gen
	c.mu.RUnlock()
	if c.served(ok, connected) {
		return copyVersion(v), nil
	}
	v, err := c.s.GetVersion(ctx, keyID, version)
	if err != nil || !connected {
		return v, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The version loaded is for keyID, whatever v.KeyID says.
	if c.fresh(keyID, start) {
		vs := c.versions[keyID]
		if vs == nil {
			vs = make(map[uint32]keystore.Version)
			c.versions[keyID] = vs
		}
		vs[version] = copyVersion(v)
	}
	return v, nil
}

// ListPublicKeys returns the public keys of the enabled versions of one
// signing key, or of all, from the cache if they are there and the watcher
// is connected. JWKS documents are built from it on every request.
func (c *Store) ListPublicKeys(ctx context.Context, keyName string) ([]keystore.PublicKey, error) {
	c.mu.RLock()
	pubs, ok := c.publics[keyName]
	connected := c.connected
	start := c.gen
	c.mu.RUnlock()
	if c.served(ok, connected) {
		return copyPublicKeys(pubs), nil
	}
	pubs, err := c.s.ListPublicKeys(ctx, keyName)
	if err != nil || !connected {
		return pubs, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Any invalidation since the load started may concern a key in the
	// list: cache it only if there was none.
	if c.connected && c.gen == start {
		c.publics[keyName] = copyPublicKeys(pubs)
	}
	return pubs, nil
}

// served counts a lookup as a hit, a miss or a bypass, and reports whether
// the cached value (found: ok) may be served.
func (c *Store) served(ok, connected bool) bool {
	switch {
	case ok && connected:
		c.hits.Add(1)
		return true
	case connected:
		c.misses.Add(1)
	default:
		c.bypasses.Add(1)
	}
	return false
}

// fresh reports whether a value of key id loaded after the generation was
// start may be cached: the watcher is still connected and neither the key
// nor everything has been invalidated since. c.mu must be held.
func (c *Store) fresh(id [16]byte, start uint64) bool {
	return c.connected && c.dropGen <= start && c.keyGen[id] <= start
}

// invalidate drops the entries of key id and keeps any load of it that
// started earlier from being cached.
func (c *Store) invalidate(id [16]byte) {
	if id == ([16]byte{}) {
		c.dropAll()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.keyGen[id] = c.gen
	if name, ok := c.names[id]; ok {
		delete(c.byName, name)
		delete(c.names, id)
	}
	delete(c.versions, id)
	clear(c.publics) // a list may hold any key
	c.invalidations.Add(1)
}

// dropAll drops every entry and keeps any load that started earlier from
// being cached.
func (c *Store) dropAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropAllLocked()
}

// dropAllLocked is dropAll with c.mu held.
func (c *Store) dropAllLocked() {
	c.gen++
	c.dropGen = c.gen
	// Every load that started before dropGen is refused anyway, so the
	// per-key generations are no longer needed.
	clear(c.keyGen)
	clear(c.byName)
	clear(c.names)
	clear(c.versions)
	clear(c.publics)
	c.invalidations.Add(1)
}

// setConnected records whether notifications are flowing and drops
// everything: entries cached before a connection may have missed changes,
// and none may be served after it is lost.
func (c *Store) setConnected(connected bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected = connected
	c.dropAllLocked()
}

// copyKey returns k with its own Labels.
func copyKey(k keystore.Key) keystore.Key {
	k.Labels = maps.Clone(k.Labels)
	return k
}

// copyPublicKeys returns a copy of pubs with DERs of their own.
func copyPublicKeys(pubs []keystore.PublicKey) []keystore.PublicKey {
	out := slices.Clone(pubs)
	for i := range out {
		out[i].DER = bytes.Clone(out[i].DER)
	}
	return out
}

// copyVersion returns v with its own HSMID and PublicKey.
func copyVersion(v keystore.Version) keystore.Version {
	v.HSMID = bytes.Clone(v.HSMID)
	v.PublicKey = bytes.Clone(v.PublicKey)
	return v
}
