package keystoretest

import (
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// mustCreateRotating creates an enabled key whose next rotation is at next.
func mustCreateRotating(t *testing.T, s keystore.Store, name string, next time.Time) keystore.Key {
	t.Helper()
	in := aesKey(name)
	in.RotationPeriod, in.NextRotationTime = 24*time.Hour, next
	k, _, err := s.CreateKey(testContext(t), in, newHSMID(t))
	if err != nil {
		t.Fatalf("CreateKey(%q): %v", name, err)
	}
	k, _ = mustCommit(t, s, k.ID, 1, true)
	return k
}

func testListDueRotations(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	// Created out of order of their due times.
	mustCreateRotating(t, s, "later", baseTime.Add(time.Microsecond))
	mustCreateRotating(t, s, "now", baseTime)
	mustCreateRotating(t, s, "overdue", baseTime.Add(-2*time.Hour))
	mustCreateRotating(t, s, "due", baseTime.Add(-time.Hour))
	mustCreateEnabled(t, s, "never")
	names := func(keys []keystore.Key) []string {
		var ns []string
		for _, k := range keys {
			ns = append(ns, k.Name)
		}
		return ns
	}
	keys, err := s.ListDueRotations(ctx, baseTime, 10)
	if err != nil {
		t.Fatalf("ListDueRotations: %v", err)
	}
	if got := names(keys); !slices.Equal(got, []string{"overdue", "due", "now"}) {
		t.Errorf("ListDueRotations(now) = %q, want [overdue due now]", got)
	}
	for _, k := range keys {
		if d := sameKey(k, mustGet(t, s, k.Name)); d != "" {
			t.Errorf("ListDueRotations returned %q: %s", k.Name, d)
		}
	}
	if keys, err := s.ListDueRotations(ctx, baseTime, 2); err != nil || !slices.Equal(names(keys), []string{"overdue", "due"}) {
		t.Errorf("ListDueRotations(limit 2) = %q, %v; want [overdue due]", names(keys), err)
	}
	if keys, err := s.ListDueRotations(ctx, baseTime.Add(-3*time.Hour), 10); err != nil || len(keys) != 0 {
		t.Errorf("ListDueRotations(before any) = %q, %v; want none", names(keys), err)
	}
	for _, limit := range []int{0, -1} {
		if keys, err := s.ListDueRotations(ctx, baseTime, limit); err != nil || len(keys) != 0 {
			t.Errorf("ListDueRotations(limit %d) = %q, %v; want none", limit, names(keys), err)
		}
	}
}

func testClaimRotation(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateRotating(t, s, "claimed", baseTime)
	next := baseTime.Add(24 * time.Hour)
	if ok, err := s.ClaimRotation(ctx, k.ID, baseTime.Add(-time.Microsecond), next); ok || err != nil {
		t.Errorf("ClaimRotation before due = %t, %v; want false", ok, err)
	}
	if got := mustGet(t, s, "claimed"); !got.NextRotationTime.Equal(baseTime) {
		t.Errorf("next rotation %v after an early claim, want %v", got.NextRotationTime, baseTime)
	}
	if ok, err := s.ClaimRotation(ctx, k.ID, baseTime, next); !ok || err != nil {
		t.Fatalf("ClaimRotation when due = %t, %v; want true", ok, err)
	}
	want := k
	want.NextRotationTime = next
	if d := sameKey(mustGet(t, s, "claimed"), want); d != "" {
		t.Errorf("GetKey after ClaimRotation: %s", d)
	}
	// The same due rotation cannot be claimed twice.
	if ok, err := s.ClaimRotation(ctx, k.ID, baseTime, next.Add(time.Hour)); ok || err != nil {
		t.Errorf("second ClaimRotation = %t, %v; want false", ok, err)
	}
	// A zero next stops scheduled rotation.
	if ok, err := s.ClaimRotation(ctx, k.ID, next, time.Time{}); !ok || err != nil {
		t.Fatalf("ClaimRotation(next zero) = %t, %v; want true", ok, err)
	}
	if got := mustGet(t, s, "claimed"); !got.NextRotationTime.IsZero() {
		t.Errorf("next rotation %v after claiming with zero next, want zero", got.NextRotationTime)
	}
	if ok, err := s.ClaimRotation(ctx, k.ID, next.Add(1000*time.Hour), next); ok || err != nil {
		t.Errorf("ClaimRotation of a key without a next rotation = %t, %v; want false", ok, err)
	}
}

func testReserveEncryptions(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "counted")
	v2 := mustEnable(t, s, k.ID)
	for _, step := range []struct{ n, want int64 }{{1000, 1000}, {0, 1000}, {1 << 31, 1<<31 + 1000}} {
		got, err := s.ReserveEncryptions(ctx, k.ID, 1, step.n)
		if err != nil || got != step.want {
			t.Errorf("ReserveEncryptions(%d) = %d, %v; want %d", step.n, got, err, step.want)
		}
	}
	if v := mustVersion(t, s, k.ID, 1); v.EncryptCount != 1<<31+1000 {
		t.Errorf("GetVersion: encrypt count %d, want %d", v.EncryptCount, 1<<31+1000)
	}
	if vs := mustListVersions(t, s, k.ID); len(vs) != 2 || vs[0].EncryptCount != 1<<31+1000 || vs[1].EncryptCount != 0 {
		t.Errorf("ListVersions: encrypt counts %v", vs)
	}
	if got, err := s.ReserveEncryptions(ctx, k.ID, v2.Version, 7); err != nil || got != 7 {
		t.Errorf("ReserveEncryptions of version 2 = %d, %v; want 7", got, err)
	}
	for _, n := range []uint32{0, 99, math.MaxUint32} {
		_, err := s.ReserveEncryptions(ctx, k.ID, n, 1)
		wantErr(t, "ReserveEncryptions of a missing version", err, keystore.ErrNotFound)
	}
}

// race runs fn(i) for i in [0, n) in n goroutines that start together.
func race(n int, fn func(i int)) {
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}

// pick returns a for even i and b for odd.
func pick(i int, a, b keystore.Store) keystore.Store {
	if i%2 == 0 {
		return a
	}
	return b
}

func testClaimRotationRace(t *testing.T, a, b keystore.Store) {
	ctx := testContext(t)
	k := mustCreateRotating(t, a, "raced", baseTime)
	const n = 16
	var (
		mu     sync.Mutex
		claims int
	)
	race(n, func(i int) {
		ok, err := pick(i, a, b).ClaimRotation(ctx, k.ID, baseTime.Add(time.Duration(i)*time.Second), baseTime.Add(24*time.Hour))
		if err != nil {
			t.Errorf("ClaimRotation: %v", err)
		}
		if ok {
			mu.Lock()
			claims++
			mu.Unlock()
		}
	})
	if claims != 1 {
		t.Errorf("%d of %d racing ClaimRotation calls claimed the rotation, want exactly 1", claims, n)
	}
	if got := mustGet(t, b, "raced"); !got.NextRotationTime.Equal(baseTime.Add(24 * time.Hour)) {
		t.Errorf("next rotation %v after the race, want %v", got.NextRotationTime, baseTime.Add(24*time.Hour))
	}
}

func testConcurrentReserve(t *testing.T, a, b keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, a, "reserved")
	const n = 8
	var (
		mu     sync.Mutex
		counts []int64
	)
	race(n, func(i int) {
		got, err := pick(i, a, b).ReserveEncryptions(ctx, k.ID, 1, int64(i+1)*1000)
		if err != nil {
			t.Errorf("ReserveEncryptions: %v", err)
			return
		}
		mu.Lock()
		counts = append(counts, got)
		mu.Unlock()
	})
	const total = n * (n + 1) / 2 * 1000
	slices.Sort(counts)
	if len(counts) != n || counts[n-1] != total || len(slices.Compact(slices.Clone(counts))) != n {
		t.Errorf("concurrent ReserveEncryptions returned %v; want %d distinct counts up to %d", counts, n, total)
	}
	if v := mustVersion(t, b, k.ID, 1); v.EncryptCount != total {
		t.Errorf("encrypt count %d after concurrent reservations, want %d", v.EncryptCount, total)
	}
}
