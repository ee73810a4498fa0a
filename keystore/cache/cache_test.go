package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// waitLimit bounds every wait for the watcher goroutine.
const waitLimit = 5 * time.Second

// testStore is a Store on a fake, with a refresh tick the test controls.
type testStore struct {
	*Store
	f    *fake
	tick chan time.Time
}

// newTestStore returns a Store on f, closed when the test ends. It retries
// a failed Watch after a millisecond.
func newTestStore(t *testing.T, f *fake) *testStore {
	t.Helper()
	tick := make(chan time.Time)
	opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	c := newStore(context.Background(), f, opts, config{tick: tick, minBackoff: time.Millisecond, maxBackoff: 4 * time.Millisecond})
	t.Cleanup(c.Close)
	return &testStore{Store: c, f: f, tick: tick}
}

// recv waits for a value on ch, failing the test after waitLimit.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// connected waits until the fake's Watch has reported its connection.
func (ts *testStore) connected(t *testing.T) {
	t.Helper()
	recv(t, ts.f.watching, "the watcher to connect")
}

// notify delivers a change of id through Watch and waits until the cache
// has handled it.
func (ts *testStore) notify(t *testing.T, id [16]byte) {
	t.Helper()
	e := event{id: id, done: make(chan struct{})}
	select {
	case ts.f.events <- e:
	case <-time.After(waitLimit):
		t.Fatal("timed out delivering a notification")
	}
	recv(t, e.done, "the notification to be handled")
}

// refreshNow makes the refresh goroutine drop everything and waits until it
// has: the second send is received only after the first drop is done.
func (ts *testStore) refreshNow(t *testing.T) {
	t.Helper()
	for range 2 {
		select {
		case ts.tick <- time.Now():
		case <-time.After(waitLimit):
			t.Fatal("timed out sending a refresh tick")
		}
	}
}

var idA, idB = [16]byte{0xa}, [16]byte{0xb}

// seed puts keys "a" and "b", each with an enabled version 1, in f.
func seed(f *fake) {
	for _, k := range []keystore.Key{
		{ID: idA, Name: "a", Labels: map[string]string{"team": "x"}, PrimaryVersion: 1},
		{ID: idB, Name: "b", PrimaryVersion: 1},
	} {
		f.put(k, keystore.Version{KeyID: k.ID, Version: 1, State: keystore.StateEnabled,
			HSMID: []byte{k.ID[0], 1}, PublicKey: []byte{0x30, k.ID[0]}})
	}
}

// getKey calls GetKey and fails the test on an error.
func getKey(t *testing.T, c *testStore, name string) keystore.Key {
	t.Helper()
	k, err := c.GetKey(t.Context(), name)
	if err != nil {
		t.Fatalf("GetKey(%q): %v", name, err)
	}
	return k
}

// getVersion calls GetVersion and fails the test on an error.
func getVersion(t *testing.T, c *testStore, id [16]byte, v uint32) keystore.Version {
	t.Helper()
	got, err := c.GetVersion(t.Context(), id, v)
	if err != nil {
		t.Fatalf("GetVersion(%x, %d): %v", id[0], v, err)
	}
	return got
}

// wantCalls fails the test unless the fake saw n calls to method.
func wantCalls(t *testing.T, f *fake, method string, n int) {
	t.Helper()
	if got := f.count(method); got != n {
		t.Errorf("%d calls to the wrapped %s, want %d", got, method, n)
	}
}

func TestHit(t *testing.T) {
	f := newFake()
	seed(f)
	c := newTestStore(t, f)
	c.connected(t)
	k1, k2 := getKey(t, c, "a"), getKey(t, c, "a")
	if k1.ID != idA || k2.ID != idA || k2.Labels["team"] != "x" {
		t.Errorf("GetKey returned %+v then %+v", k1, k2)
	}
	wantCalls(t, f, "GetKey", 1)
	v1, v2 := getVersion(t, c, idA, 1), getVersion(t, c, idA, 1)
	if v1.State != keystore.StateEnabled || !bytes.Equal(v2.HSMID, []byte{0xa, 1}) {
		t.Errorf("GetVersion returned %+v then %+v", v1, v2)
	}
	wantCalls(t, f, "GetVersion", 1)
	if got, want := c.Stats(), (Stats{Hits: 2, Misses: 2, Invalidations: 1}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestMissesAreNotCached(t *testing.T) {
	f := newFake()
	c := newTestStore(t, f)
	c.connected(t)
	for range 2 {
		if _, err := c.GetKey(t.Context(), "nope"); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("GetKey(unknown): %v", err)
		}
		if _, err := c.GetVersion(t.Context(), idA, 7); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("GetVersion(unknown): %v", err)
		}
	}
	wantCalls(t, f, "GetKey", 2)
	wantCalls(t, f, "GetVersion", 2)
}

func TestCopies(t *testing.T) {
	f := newFake()
	seed(f)
	c := newTestStore(t, f)
	c.connected(t)
	for range 2 { // the first result is the loaded value, the second a hit
		k := getKey(t, c, "a")
		k.Labels["team"] = "mutated"
		v := getVersion(t, c, idA, 1)
		v.HSMID[0], v.PublicKey[0] = 0xff, 0xff
	}
	if k := getKey(t, c, "a"); k.Labels["team"] != "x" {
		t.Errorf("cached Labels changed through a returned key: %v", k.Labels)
	}
	if v := getVersion(t, c, idA, 1); v.HSMID[0] != 0xa || v.PublicKey[0] != 0x30 {
		t.Errorf("cached version changed through a returned one: %x, %x", v.HSMID, v.PublicKey)
	}
	wantCalls(t, f, "GetKey", 1)
}

func TestWatchInvalidates(t *testing.T) {
	f := newFake()
	seed(f)
	c := newTestStore(t, f)
	c.connected(t)
	getKey(t, c, "a")
	getKey(t, c, "b")
	getVersion(t, c, idA, 1)

	f.put(keystore.Key{ID: idA, Name: "a", PrimaryVersion: 2}, keystore.Version{KeyID: idA, Version: 1, State: keystore.StateDisabled})
	c.notify(t, idA)
	if k := getKey(t, c, "a"); k.PrimaryVersion != 2 {
		t.Errorf("after a notification, PrimaryVersion = %d, want 2", k.PrimaryVersion)
	}
	if v := getVersion(t, c, idA, 1); v.State != keystore.StateDisabled {
		t.Errorf("after a notification, state = %s, want DISABLED", v.State)
	}
	getKey(t, c, "b") // another key's entry stays
	wantCalls(t, f, "GetKey", 3)
	wantCalls(t, f, "GetVersion", 2)
}

func TestZeroIDDropsAll(t *testing.T) {
	f := newFake()
	seed(f)
	c := newTestStore(t, f)
	c.connected(t)
	getKey(t, c, "a")
	getKey(t, c, "b")
	getVersion(t, c, idB, 1)
	c.notify(t, [16]byte{})
	getKey(t, c, "a")
	getKey(t, c, "b")
	getVersion(t, c, idB, 1)
	wantCalls(t, f, "GetKey", 4)
	wantCalls(t, f, "GetVersion", 2)
}

func TestRefreshDropsAll(t *testing.T) {
	f := newFake()
	seed(f)
	c := newTestStore(t, f)
	c.connected(t)
	getKey(t, c, "a")
	getVersion(t, c, idA, 1)
	c.refreshNow(t)
	getKey(t, c, "a")
	getVersion(t, c, idA, 1)
	wantCalls(t, f, "GetKey", 2)
	wantCalls(t, f, "GetVersion", 2)
}

func TestLocalMutationInvalidates(t *testing.T) {
	f := newFake()
	seed(f)
	c := newTestStore(t, f)
	c.connected(t)
	getKey(t, c, "a")
	getKey(t, c, "b")
	period := time.Hour
	if _, err := c.UpdateKey(t.Context(), idA, keystore.KeyUpdate{RotationPeriod: &period}); err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	if k := getKey(t, c, "a"); k.RotationPeriod != period {
		t.Errorf("after UpdateKey, RotationPeriod = %v, want %v", k.RotationPeriod, period)
	}
	getKey(t, c, "b")
	wantCalls(t, f, "GetKey", 3)

	// A failed change drops the entries too: it may have committed.
	getVersion(t, c, idB, 1)
	_, err := c.SetVersionState(t.Context(), idB, 1, keystore.Transition{From: []keystore.State{keystore.StateDisabled}, To: keystore.StateEnabled})
	if !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("SetVersionState: %v", err)
	}
	getVersion(t, c, idB, 1)
	wantCalls(t, f, "GetVersion", 2)
}

func TestNoCachingWhileWatchFails(t *testing.T) {
	f := newFake()
	seed(f)
	f.setWatchErr(fmt.Errorf("fake: connection refused: %w", keystore.ErrUnavailable))
	c := newTestStore(t, f)
	for range 3 { // the watcher keeps retrying
		recv(t, f.attempts, "a Watch attempt")
	}
	for range 3 {
		getKey(t, c, "a")
		getVersion(t, c, idA, 1)
	}
	wantCalls(t, f, "GetKey", 3)
	wantCalls(t, f, "GetVersion", 3)
	if s := c.Stats(); s.Hits != 0 || s.Misses != 0 || s.Bypasses != 6 {
		t.Errorf("Stats() = %+v, want 6 bypasses only", s)
	}

	// Once Watch connects, the cache is used.
	f.setWatchErr(nil)
	c.connected(t)
	getKey(t, c, "a")
	getKey(t, c, "a")
	wantCalls(t, f, "GetKey", 4)
}

func TestNoCachingAfterWatchBreaks(t *testing.T) {
	f := newFake()
	seed(f)
	c := newTestStore(t, f)
	recv(t, f.attempts, "the first Watch attempt")
	c.connected(t)
	getKey(t, c, "a")
	getVersion(t, c, idA, 1)

	// The connection breaks and reconnecting fails: the retry starts only
	// after the cache has stopped serving.
	f.setWatchErr(errors.New("fake: still down"))
	select {
	case f.breaks <- errors.New("fake: connection lost"):
	case <-time.After(waitLimit):
		t.Fatal("timed out breaking the watch")
	}
	recv(t, f.attempts, "a Watch retry")
	for range 3 {
		getKey(t, c, "a")
		getVersion(t, c, idA, 1)
	}
	wantCalls(t, f, "GetKey", 4)
	wantCalls(t, f, "GetVersion", 4)

	f.setWatchErr(nil)
	c.connected(t)
	getKey(t, c, "a")
	getKey(t, c, "a")
	wantCalls(t, f, "GetKey", 5)
}

// TestFillRace checks that a value read before an invalidation is not
// cached after it.
func TestFillRace(t *testing.T) {
	for _, how := range []string{"notification", "drop all", "local change", "reconnect"} {
		t.Run(how, func(t *testing.T) {
			f := newFake()
			seed(f)
			c := newTestStore(t, f)
			c.connected(t)

			entered, release := make(chan struct{}), make(chan struct{})
			f.setBlockGetKey(func() {
				entered <- struct{}{}
				<-release
			})
			type result struct {
				k   keystore.Key
				err error
			}
			res := make(chan result, 1)
			go func() {
				k, err := c.GetKey(context.Background(), "a")
				res <- result{k, err}
			}()
			recv(t, entered, "GetKey to reach the wrapped store")
			f.setBlockGetKey(nil)

			// The key changes while the old value is in flight.
			f.put(keystore.Key{ID: idA, Name: "a", PrimaryVersion: 2})
			switch how {
			case "notification":
				c.notify(t, idA)
			case "drop all":
				c.notify(t, [16]byte{})
			case "local change":
				period := time.Hour
				if _, err := c.UpdateKey(t.Context(), idA, keystore.KeyUpdate{RotationPeriod: &period}); err != nil {
					t.Fatalf("UpdateKey: %v", err)
				}
			case "reconnect":
				select {
				case f.breaks <- errors.New("fake: connection lost"):
				case <-time.After(waitLimit):
					t.Fatal("timed out breaking the watch")
				}
				c.connected(t)
			}
			close(release)
			r := recv(t, res, "the blocked GetKey")
			if r.err != nil || r.k.PrimaryVersion != 1 {
				t.Fatalf("blocked GetKey = %+v, %v; want the old value", r.k, r.err)
			}
			if k := getKey(t, c, "a"); k.PrimaryVersion != 2 {
				t.Errorf("GetKey after the race = version %d, want 2: the stale value was cached", k.PrimaryVersion)
			}
			wantCalls(t, f, "GetKey", 2)
		})
	}
}

func TestConcurrent(t *testing.T) {
	f := newFake()
	seed(f)
	c := newTestStore(t, f)
	c.connected(t)
	const workers, rounds = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, name := idA, "a"
			if w%2 == 1 {
				id, name = idB, "b"
			}
			for range rounds {
				if k, err := c.GetKey(t.Context(), name); err != nil || k.ID != id {
					t.Errorf("GetKey(%q) = %x, %v", name, k.ID[0], err)
					return
				}
				if _, err := c.GetVersion(t.Context(), id, 1); err != nil {
					t.Errorf("GetVersion: %v", err)
					return
				}
			}
		}()
	}
	for i := range 50 {
		f.put(keystore.Key{ID: idA, Name: "a", PrimaryVersion: uint32(i + 2)})
		c.notify(t, [][16]byte{idA, idB, {}}[i%3])
	}
	wg.Wait()
	c.notify(t, idA)
	if k := getKey(t, c, "a"); k.PrimaryVersion != 51 {
		t.Errorf("PrimaryVersion = %d after the last change, want 51", k.PrimaryVersion)
	}
}

func TestClose(t *testing.T) {
	f := newFake()
	c := newTestStore(t, f)
	c.connected(t)
	c.Close()
	closed, watching := f.state()
	if !closed || watching != 0 {
		t.Errorf("after Close: wrapped store closed = %v, %d Watch calls still running", closed, watching)
	}
	c.Close() // a second Close does nothing
}

func TestCloseWhileRetrying(t *testing.T) {
	f := newFake()
	f.setWatchErr(errors.New("fake: down"))
	c := newStore(context.Background(), f, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		config{tick: make(chan time.Time), minBackoff: time.Hour, maxBackoff: time.Hour})
	recv(t, f.attempts, "the first Watch attempt")
	c.Close() // returns although the retry would wait an hour
	if closed, watching := f.state(); !closed || watching != 0 {
		t.Errorf("after Close: wrapped store closed = %v, %d Watch calls still running", closed, watching)
	}
}

func TestContextEndStopsWatcher(t *testing.T) {
	f := newFake()
	ctx, cancel := context.WithCancel(context.Background())
	c := newStore(ctx, f, Options{}, config{tick: make(chan time.Time), minBackoff: time.Millisecond, maxBackoff: time.Millisecond})
	t.Cleanup(c.Close)
	recv(t, f.watching, "the watcher to connect")
	seed(f)
	cancel()
	c.wg.Wait()
	// With the watcher gone the cache is not used.
	getKey(t, &testStore{Store: c}, "a")
	getKey(t, &testStore{Store: c}, "a")
	wantCalls(t, f, "GetKey", 2)
}

// TestPublicKeysCached checks that JWKS listings are served from memory
// and dropped by a change to any key.
func TestPublicKeysCached(t *testing.T) {
	f := newFake()
	seed(f)
	c := newTestStore(t, f)
	c.connected(t)
	list := func(name string) {
		t.Helper()
		for range 2 {
			if _, err := c.ListPublicKeys(t.Context(), name); err != nil {
				t.Fatalf("ListPublicKeys(%q): %v", name, err)
			}
		}
	}
	list("")
	list("a")
	wantCalls(t, f, "ListPublicKeys", 2)
	c.notify(t, idB) // b changed: the listing of every key must go
	list("")
	wantCalls(t, f, "ListPublicKeys", 3)
	list("a") // dropped too: a per-key listing is not worth tracking apart
	wantCalls(t, f, "ListPublicKeys", 4)
	c.refreshNow(t)
	list("a")
	wantCalls(t, f, "ListPublicKeys", 5)
}
