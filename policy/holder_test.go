package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const (
	policyA = "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [Encrypt]\n"
	policyB = "rules:\n  - identities: [\"token:b\"]\n    keys: [k]\n    allow: [Encrypt]\n"
	policyX = "rules:\n  - identities: [\"token:a\"]\n    keys: [k]\n    allow: [Encrpyt]\n"
)

// writePolicy writes src to path or fails the test.
func writePolicy(t *testing.T, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestNewHolder(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	writePolicy(t, good, policyA)
	writePolicy(t, bad, policyX)

	h, err := NewHolder(good)
	if err != nil {
		t.Fatalf("NewHolder(good): %v", err)
	}
	if h.Path() != good || !h.Policy().Allow("token:a", "Encrypt", "k") {
		t.Error("NewHolder does not hold the file's policy")
	}
	if h, err := NewHolder(bad); err == nil || h != nil || !errors.Is(err, ErrInvalid) {
		t.Errorf("NewHolder(bad) = %v, %v; want nil, ErrInvalid", h, err)
	}
	if _, err := NewHolder(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NewHolder(missing) = %v, want ErrNotExist", err)
	}
}

func TestHolderReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, policyA)
	h, err := NewHolder(path)
	if err != nil {
		t.Fatal(err)
	}
	first := h.Policy()

	writePolicy(t, path, policyB)
	if err := h.Reload(); err != nil {
		t.Fatalf("Reload(good): %v", err)
	}
	p := h.Policy()
	if p.Allow("token:a", "Encrypt", "k") || !p.Allow("token:b", "Encrypt", "k") {
		t.Error("Reload did not put the new policy in force")
	}
	if p.Digest() == first.Digest() {
		t.Error("new policy has the old digest")
	}
	if !first.Allow("token:a", "Encrypt", "k") {
		t.Error("Reload changed a Policy already handed out")
	}

	writePolicy(t, path, policyX)
	err = h.Reload()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Reload(bad) = %v, want ErrInvalid", err)
	}
	for _, want := range []string{path, "rules[0].allow[0]", "Encrpyt", "previous policy kept"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Reload error %q does not mention %q", err, want)
		}
	}
	if h.Policy() != p {
		t.Error("a failed Reload replaced the policy")
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := h.Reload(); !errors.Is(err, os.ErrNotExist) || h.Policy() != p {
		t.Errorf("Reload(missing) = %v, or replaced the policy", err)
	}
}

// TestHolderConcurrent checks under -race that Policy and Allow may run
// while Reload replaces the policy, and that readers only ever see a
// whole policy: one of the two good files, never the bad one.
func TestHolderConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, policyA)
	h, err := NewHolder(path)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				p := h.Policy()
				a, b := p.Allow("token:a", "Encrypt", "k"), p.Allow("token:b", "Encrypt", "k")
				if a == b {
					mu.Lock()
					bad = append(bad, p.Digest())
					mu.Unlock()
				}
			}
		})
	}
	// Concurrent Reloads as well as concurrent readers.
	var reloaders sync.WaitGroup
	for i := range 50 {
		src := []string{policyB, policyX, policyA}[i%3]
		writePolicy(t, path, src)
		reloaders.Go(func() { _ = h.Reload() })
		if err := h.Reload(); (err == nil) == (src == policyX) {
			t.Errorf("Reload of iteration %d = %v", i, err)
		}
	}
	reloaders.Wait()
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("readers saw %d inconsistent policies", len(bad))
	}
}
