package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/softhsm"
)

func TestMain(m *testing.M) { softhsm.Main(m) }

// openToken opens a Backend on tok and closes it when the test ends.
func openToken(tb testing.TB, tok *softhsm.Token, maxSessions int) *Backend {
	tb.Helper()
	cfg := Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN, MaxSessions: maxSessions}
	b, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return b
}

// newBackend opens a Backend on a fresh token.
func newBackend(tb testing.TB) (*Backend, *softhsm.Token) {
	tb.Helper()
	tok := softhsm.NewToken(tb)
	return openToken(tb, tok, 0), tok
}

func TestConformance(t *testing.T) {
	hsmtest.Exercise(t, func(t *testing.T) hsm.Backend {
		b, _ := newBackend(t)
		return b
	})
}

func TestOpenErrors(t *testing.T) {
	tok := softhsm.NewToken(t)
	ctx := t.Context()
	cases := []struct {
		name string
		cfg  Config
		want error
		text string
	}{
		{"wrong PIN", Config{Module: tok.Module, TokenLabel: tok.Label, PIN: "0000-wrong"}, ErrLogin, "hsm: login failed: incorrect PIN"},
		{"unknown token", Config{Module: tok.Module, TokenLabel: "no-such-token", PIN: tok.PIN}, ErrToken, `no token labelled "no-such-token"`},
		{"missing module", Config{Module: "/nonexistent/libpkcs11.so", TokenLabel: tok.Label, PIN: tok.PIN}, ErrModule, "/nonexistent/libpkcs11.so"},
		{"no PIN", Config{Module: tok.Module, TokenLabel: tok.Label}, hsm.ErrInvalid, "no PIN"},
		{"no label", Config{Module: tok.Module, PIN: tok.PIN}, hsm.ErrInvalid, "no token label"},
	}
	for _, c := range cases {
		b, err := Open(ctx, c.cfg)
		if err == nil {
			b.Close()
			t.Errorf("%s: Open succeeded", c.name)
			continue
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: err = %q, want %v containing %q", c.name, err, c.want, c.text)
		}
		if strings.Contains(err.Error(), tok.PIN) {
			t.Errorf("%s: error contains the PIN", c.name)
		}
	}
	modules.mu.Lock()
	n := len(modules.m)
	modules.mu.Unlock()
	if n != 0 {
		t.Errorf("failed Opens left %d modules loaded", n)
	}
	// The right PIN still works: the failures left no state behind.
	b := openToken(t, tok, 0)
	if err := b.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// The token is now logged in, so C_Login no longer checks PINs; a
	// wrong one must still be refused.
	wrong := Config{Module: tok.Module, TokenLabel: tok.Label, PIN: "0000-wrong"}
	if b2, err := Open(ctx, wrong); !errors.Is(err, ErrLogin) {
		if err == nil {
			b2.Close()
		}
		t.Errorf("Open with a wrong PIN while logged in: %v, want ErrLogin", err)
	}
}

func TestConfigRedactsPIN(t *testing.T) {
	const pin = "s3cret-pin-value"
	cfg := Config{Module: "/m.so", TokenLabel: "t", PIN: pin}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("open", "cfg", cfg)
	for _, s := range []string{
		fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
		fmt.Sprintf("%v", &cfg), fmt.Sprintf("%s", cfg), fmt.Sprintf("%x", cfg), logged.String(),
	} {
		if strings.Contains(s, pin) || strings.Contains(s, fmt.Sprintf("%x", pin)) {
			t.Errorf("PIN printed: %s", s)
		}
	}
	b := &Backend{label: "t", pin: pin}
	if s := fmt.Sprintf("%v %+v %#v", b, b, b); strings.Contains(s, pin) {
		t.Errorf("Backend prints the PIN: %s", s)
	}
}

func TestHandleCached(t *testing.T) {
	b, tok := newBackend(t)
	ctx := t.Context()
	id := hsmtest.NewKey(t, b)
	nonce := hsmtest.NewNonce(t)
	ct, err := b.Seal(ctx, id, nonce, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := b.finds.Load()
	for range 10 {
		if _, err := b.Seal(ctx, id, nonce, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Open(ctx, id, nonce, ct, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.finds.Load() - before; n != 0 {
		t.Errorf("%d C_FindObjects searches on the request path after GenerateKey", n)
	}

	// A second Backend looks the key up once, on first use.
	b2 := openToken(t, tok, 0)
	for range 5 {
		if _, err := b2.Open(ctx, id, nonce, ct, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := b2.finds.Load(); n != 1 {
		t.Errorf("second Backend searched %d times, want 1", n)
	}

	// Destroying through one Backend invalidates the other's cached
	// handle; it notices, searches once more and reports ErrNotFound.
	if err := b.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Open(ctx, id, nonce, ct, nil); !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("Open of a key destroyed elsewhere: %v", err)
	}
	if n := b2.finds.Load(); n != 2 {
		t.Errorf("second Backend searched %d times, want 2", n)
	}
}

func TestPoolWaitHonoursContext(t *testing.T) {
	tok := softhsm.NewToken(t)
	b := openToken(t, tok, 1)
	id := hsmtest.NewKey(t, b)
	s, err := b.pool.get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	held := true
	release := func() {
		if held {
			b.pool.put(s)
			held = false
		}
	}
	t.Cleanup(release)

	for _, key := range [][]byte{id, hsmtest.NewID(t)} { // cached and uncached
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		start := time.Now()
		_, err := b.Seal(ctx, key, hsmtest.NewNonce(t), []byte("x"), nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("Seal with the pool exhausted: %v, want DeadlineExceeded and ErrUnavailable", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Seal returned after %v", d)
		}
	}
	if err := b.Ping(canceled(t)); !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with the pool exhausted: %v", err)
	}

	// A waiter gets the session once it is released.
	done := make(chan error, 1)
	go func() {
		_, err := b.Seal(t.Context(), id, hsmtest.NewNonce(t), []byte("x"), nil)
		done <- err
	}()
	release()
	if err := <-done; err != nil {
		t.Errorf("Seal after release: %v", err)
	}
}

func canceled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}

func TestBackendsOnTwoTokens(t *testing.T) {
	ctx := t.Context()
	b1, _ := newBackend(t)
	b2, tok2 := newBackend(t)
	b3 := openToken(t, tok2, 0) // a second Backend on the same token
	id1, id2 := hsmtest.NewKey(t, b1), hsmtest.NewKey(t, b2)
	nonce := hsmtest.NewNonce(t)
	ct2, err := b2.Seal(ctx, id2, nonce, []byte("two"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b1.Seal(ctx, id2, nonce, []byte("x"), nil); !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("key of token 2 usable through token 1: %v", err)
	}
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b1.Seal(ctx, id1, nonce, []byte("x"), nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Seal on a closed Backend: %v", err)
	}
	if err := b2.Ping(ctx); err != nil {
		t.Fatalf("Ping on token 2 after closing token 1's Backend: %v", err)
	}
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	// b3 shares token 2 and its login with the closed b2.
	if err := b3.Ping(ctx); err != nil {
		t.Fatalf("Ping after closing the other Backend on the token: %v", err)
	}
	if pt, err := b3.Open(ctx, id2, nonce, ct2, nil); err != nil || string(pt) != "two" {
		t.Fatalf("Open after closing the other Backend on the token: %q, %v", pt, err)
	}
}

func TestReopen(t *testing.T) {
	ctx := t.Context()
	tok := softhsm.NewToken(t)
	cfg := Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN}
	b, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := hsmtest.NewKey(t, b)
	nonce := hsmtest.NewNonce(t)
	ct, err := b.Seal(ctx, id, nonce, []byte("kept"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	b = openToken(t, tok, 0)
	if pt, err := b.Open(ctx, id, nonce, ct, []byte("aad")); err != nil || string(pt) != "kept" {
		t.Fatalf("Open after reopening: %q, %v", pt, err)
	}
}
