package kms

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
)

// countingStore counts ReserveEncryptions calls.
type countingStore struct {
	*keystoretest.Memory
	reserves atomic.Int64
}

func (c *countingStore) ReserveEncryptions(ctx context.Context, keyID [16]byte, version uint32, n int64) (int64, error) {
	c.reserves.Add(1)
	return c.Memory.ReserveEncryptions(ctx, keyID, version, n)
}

// TestEncryptionCountsAreBatched checks that the per-version count is
// reserved a batch at a time, never per request, and never below the
// number of encryptions done.
func TestEncryptionCountsAreBatched(t *testing.T) {
	ctx := context.Background()
	store := &countingStore{Memory: keystoretest.NewMemory()}
	svc := New(hsmtest.NewMemory(), store, WithEncryptionLimits(1<<30, 1<<31, 100))
	k, err := svc.CreateKey(ctx, CreateKeyRequest{Name: "k", Algorithm: keystore.AES256GCM})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 250; i++ {
		if _, _, err := svc.Encrypt(ctx, "k", []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.reserves.Load(); n != 3 {
		t.Fatalf("250 encryptions made %d reservations, want 3", n)
	}
	v, _ := store.GetVersion(ctx, k.ID, 1)
	if v.EncryptCount < 250 {
		t.Fatalf("persisted count %d is below the 250 encryptions done", v.EncryptCount)
	}
}

// TestDestroyNeverEarly reschedules a restored version between the
// scheduler's listing and its update: the guard under the row lock refuses.
func TestDestroyNeverEarly(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_000_000, 0)
	store := keystoretest.NewMemory()
	svc := New(hsmtest.NewMemory(), store, WithClock(func() time.Time { return now }))
	if _, err := svc.CreateKey(ctx, CreateKeyRequest{Name: "k", Algorithm: keystore.AES256GCM, DestroyDelay: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RotateKey(ctx, "k", false); err != nil {
		t.Fatal(err)
	}
	k, _, err := svc.ScheduleKeyVersionDestruction(ctx, "k", 1)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	due, _ := store.ListVersionsByState(ctx, keystore.StateDestroyScheduled, now, 10)
	if len(due) != 1 {
		t.Fatalf("due = %v", due)
	}
	// Meanwhile: restored and scheduled again, due a minute from now.
	if _, _, err := svc.RestoreKeyVersion(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.ScheduleKeyVersionDestruction(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	_, err = store.SetVersionState(ctx, k.ID, 1, keystore.Transition{
		From: []keystore.State{keystore.StateDestroyScheduled}, To: keystore.StateDestroyed, DestroyTime: now, DueBy: now,
	})
	if !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("destroying before the new due time: %v, want ErrConflict", err)
	}
	if err := svc.RunScheduled(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := store.GetVersion(ctx, k.ID, 1); v.State != keystore.StateDestroyScheduled {
		t.Fatalf("version is %s before its new due time", v.State)
	}
}

func TestPublishLeadRules(t *testing.T) {
	ctx := context.Background()
	svc := New(hsmtest.NewMemory(), keystoretest.NewMemory())
	bad := []CreateKeyRequest{
		{Name: "a", Algorithm: keystore.ECP256SHA256, PublishLead: time.Minute},
		{Name: "b", Algorithm: keystore.ECP256SHA256, RotationPeriod: 5 * time.Minute},
		{Name: "c", Algorithm: keystore.ECP256SHA256, RotationPeriod: time.Hour, PublishLead: time.Hour},
	}
	for _, req := range bad {
		if _, err := svc.CreateKey(ctx, req); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%+v: %v, want ErrInvalidArgument", req, err)
		}
	}
	if _, err := svc.CreateKey(ctx, CreateKeyRequest{Name: "ok", Algorithm: keystore.ECP256SHA256, RotationPeriod: time.Hour}); err != nil {
		t.Fatal(err)
	}
	zero := time.Duration(0)
	if _, err := svc.UpdateKey(ctx, "ok", KeyUpdate{PublishLead: &zero}); err != nil {
		t.Fatalf("a zero lead (no staging): %v", err)
	}
	// An AES key's rotation period is not tied to the lead.
	if _, err := svc.CreateKey(ctx, CreateKeyRequest{Name: "aes", Algorithm: keystore.AES256GCM, RotationPeriod: time.Minute}); err != nil {
		t.Fatal(err)
	}
}

func TestSignJWTClaimsMustBeAnObject(t *testing.T) {
	ctx := context.Background()
	svc := New(hsmtest.NewMemory(), keystoretest.NewMemory())
	if _, err := svc.CreateKey(ctx, CreateKeyRequest{Name: "k", Algorithm: keystore.ECP256SHA256}); err != nil {
		t.Fatal(err)
	}
	for _, claims := range []string{"", "null", "[]", `"x"`, "1", "{", `{"a":1}x`} {
		if _, _, err := svc.SignJWT(ctx, "k", []byte(claims), nil); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("claims %q: %v, want ErrInvalidArgument", claims, err)
		}
	}
	if _, _, err := svc.SignJWT(ctx, "k", []byte(` { "sub" : "a" } `), nil); err != nil {
		t.Fatalf("an object with spaces: %v", err)
	}
}
