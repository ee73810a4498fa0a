package cache

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/postgres"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
)

// notifying is a keystore.Store whose Watch also sends every ID it reports,
// after the cache has handled it, on seen.
type notifying struct {
	keystore.Store
	seen chan [16]byte
}

func (n notifying) Watch(ctx context.Context, changed func(keyID [16]byte)) error {
	return n.Store.Watch(ctx, func(id [16]byte) {
		changed(id)
		select {
		case n.seen <- id:
		default: // the test reads only what it waits for
		}
	})
}

// TestPostgresReplicas checks that a change made through one Store on a
// database reaches the cache of another Store on it.
func TestPostgresReplicas(t *testing.T) {
	url := postgrestest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatalf("open store A: %v", err)
	}
	t.Cleanup(a.Close)
	b, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatalf("open store B: %v", err)
	}
	seen := make(chan [16]byte, 64)
	cb := New(ctx, notifying{Store: b, seen: seen}, Options{})
	t.Cleanup(cb.Close)

	k, _, err := a.CreateKey(ctx, keystore.Key{Name: "replicated", Purpose: keystore.PurposeEncryptDecrypt, Algorithm: keystore.AES256GCM}, make([]byte, 16))
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, _, err := a.CommitVersion(ctx, k.ID, 1, nil, true); err != nil {
		t.Fatalf("CommitVersion: %v", err)
	}
	waitFor := func(what string, done func() bool) {
		t.Helper()
		for !done() {
			select {
			case <-seen:
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("cache B to connect and cache the key", func() bool {
		before := cb.Stats().Hits
		if _, err := cb.GetVersion(ctx, k.ID, 1); err != nil {
			t.Fatalf("GetVersion through B: %v", err)
		}
		v, err := cb.GetVersion(ctx, k.ID, 1)
		if err != nil {
			t.Fatalf("GetVersion through B: %v", err)
		}
		return v.State == keystore.StateEnabled && cb.Stats().Hits > before
	})

	if _, err := a.SetVersionState(ctx, k.ID, 1, keystore.Transition{
		From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDisabled,
	}); err != nil {
		t.Fatalf("SetVersionState through A: %v", err)
	}
	waitFor("cache B to see the version disabled", func() bool {
		v, err := cb.GetVersion(ctx, k.ID, 1)
		if err != nil {
			t.Fatalf("GetVersion through B: %v", err)
		}
		return v.State == keystore.StateDisabled
	})

	// A JWKS listing cached by B drops the version A disables.
	sk, _, err := a.CreateKey(ctx, keystore.Key{Name: "signer", Purpose: keystore.PurposeSignVerify, Algorithm: keystore.ECP256SHA256}, bytes.Repeat([]byte{1}, 16))
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, _, err := a.CommitVersion(ctx, sk.ID, 1, []byte{0x30, 0x00}, true); err != nil {
		t.Fatalf("CommitVersion: %v", err)
	}
	listed := func() int {
		pubs, err := cb.ListPublicKeys(ctx, "")
		if err != nil {
			t.Fatalf("ListPublicKeys through B: %v", err)
		}
		return len(pubs)
	}
	waitFor("cache B to list the signing key", func() bool {
		before := cb.Stats().Hits
		return listed() == 1 && listed() == 1 && cb.Stats().Hits > before
	})
	if _, err := a.SetVersionState(ctx, sk.ID, 1, keystore.Transition{
		From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDisabled,
	}); err != nil {
		t.Fatalf("SetVersionState through A: %v", err)
	}
	waitFor("cache B to drop the disabled signing version", func() bool { return listed() == 0 })
}
