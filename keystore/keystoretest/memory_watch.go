package keystoretest

import (
	"context"
	"fmt"
	"sync"
)

// watcher is one running Watch call.
type watcher struct {
	// mu serialises the calls of changed and guards done, so that changed
	// is never called concurrently, nor after Watch has returned.
	mu      sync.Mutex
	done    bool
	changed func(keyID [16]byte)
	// stop receives the error Watch returns if the store fails or closes.
	stop chan error
}

// deliver calls w.changed with id unless Watch has returned.
func (w *watcher) deliver(id [16]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.changed(id)
	}
}

// stopWatchers makes every running Watch call return err. The caller holds
// m.mu.
func (m *Memory) stopWatchers(err error) {
	for w := range m.watchers {
		select {
		case w.stop <- err:
		default:
		}
		delete(m.watchers, w)
	}
}

// Watch implements keystore.Store. It calls changed with the zero ID once
// it is registered, then with the key of every change, from the goroutine
// that made it, before that call returns; calls of changed never overlap.
// It returns when ctx ends, or with the injected error on Fail, or after
// Close. changed must not change the store.
func (m *Memory) Watch(ctx context.Context, changed func(keyID [16]byte)) error {
	m.mu.Lock()
	if err := m.check(ctx); err != nil {
		m.mu.Unlock()
		return err
	}
	w := &watcher{changed: changed, stop: make(chan error, 1)}
	m.watchers[w] = struct{}{}
	m.mu.Unlock()

	w.deliver([16]byte{})
	var err error
	select {
	case <-ctx.Done():
		err = fmt.Errorf("keystoretest: watch: %w", ctx.Err())
	case err = <-w.stop:
	}
	m.mu.Lock()
	delete(m.watchers, w)
	m.mu.Unlock()
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
	return err
}

// RunExclusive implements keystore.Store: it runs fn unless a call under the
// same name is running, on this Memory.
func (m *Memory) RunExclusive(ctx context.Context, name string, fn func(ctx context.Context) error) (bool, error) {
	m.mu.Lock()
	if err := m.check(ctx); err != nil {
		m.mu.Unlock()
		return false, err
	}
	if m.exclusive[name] {
		m.mu.Unlock()
		return false, nil
	}
	m.exclusive[name] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.exclusive, name)
		m.mu.Unlock()
	}()
	return true, fn(ctx)
}
