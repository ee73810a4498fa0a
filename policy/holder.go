package policy

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Holder holds the policy in force, loaded from a file, and replaces it
// on Reload. It is safe for concurrent use.
type Holder struct {
	path string
	// mu serialises Reload, so that a slow reload cannot overwrite the
	// result of a later one.
	mu  sync.Mutex
	cur atomic.Pointer[Policy]
}

// NewHolder loads the policy file at path. It returns an error, and no
// Holder, if the file cannot be read or does not parse; the server then
// refuses to start.
func NewHolder(path string) (*Holder, error) {
	p, err := Load(path)
	if err != nil {
		return nil, err
	}
	h := &Holder{path: path}
	h.cur.Store(p)
	return h, nil
}

// Path returns the path of the policy file.
func (h *Holder) Path() string { return h.path }

// Policy returns the policy in force. It never returns nil for a Holder
// made by NewHolder.
func (h *Holder) Policy() *Policy { return h.cur.Load() }

// Reload reads the policy file again and, if it parses, puts it in
// force. Otherwise the previous policy stays in force and the error
// names the file and the reason.
func (h *Holder) Reload() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, err := Load(h.path)
	if err != nil {
		return fmt.Errorf("policy: reload failed, previous policy kept: %w", err)
	}
	h.cur.Store(p)
	return nil
}
