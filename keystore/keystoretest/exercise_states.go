package keystoretest

import (
	"math"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

func testSetVersionState(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "states")
	v2 := mustEnable(t, s, k.ID)
	steps := []struct {
		t    keystore.Transition
		want keystore.State
	}{
		{keystore.Transition{From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDisabled}, keystore.StateDisabled},
		{keystore.Transition{From: []keystore.State{keystore.StateEnabled, keystore.StateDisabled}, To: keystore.StateDestroyScheduled, DestroyTime: baseTime}, keystore.StateDestroyScheduled},
		// Restore clears the destroy time.
		{keystore.Transition{From: []keystore.State{keystore.StateDestroyScheduled}, To: keystore.StateDisabled}, keystore.StateDisabled},
		{keystore.Transition{From: []keystore.State{keystore.StateDisabled}, To: keystore.StateEnabled}, keystore.StateEnabled},
		{keystore.Transition{From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDestroyScheduled, DestroyTime: baseTime.Add(time.Hour)}, keystore.StateDestroyScheduled},
		{keystore.Transition{From: []keystore.State{keystore.StateDestroyScheduled}, To: keystore.StateDestroyed, DestroyTime: baseTime.Add(2 * time.Hour)}, keystore.StateDestroyed},
	}
	for _, step := range steps {
		got, err := s.SetVersionState(ctx, k.ID, v2.Version, step.t)
		if err != nil {
			t.Fatalf("SetVersionState(%v -> %s): %v", step.t.From, step.t.To, err)
		}
		want := v2
		want.State, want.DestroyTime = step.want, step.t.DestroyTime
		if d := sameVersion(got, want); d != "" {
			t.Errorf("SetVersionState(%v -> %s) returned: %s", step.t.From, step.t.To, d)
		}
		if d := sameVersion(mustVersion(t, s, k.ID, v2.Version), want); d != "" {
			t.Errorf("GetVersion after SetVersionState(%v -> %s): %s", step.t.From, step.t.To, d)
		}
	}

	// Refused transitions change nothing.
	before := mustVersion(t, s, k.ID, v2.Version)
	for _, from := range [][]keystore.State{nil, {keystore.StateEnabled, keystore.StateDisabled, keystore.StateDestroyScheduled}} {
		_, err := s.SetVersionState(ctx, k.ID, v2.Version, keystore.Transition{From: from, To: keystore.StateEnabled})
		wantErr(t, "SetVersionState of a destroyed version", err, keystore.ErrConflict)
	}
	if d := sameVersion(mustVersion(t, s, k.ID, v2.Version), before); d != "" {
		t.Errorf("GetVersion after refused transitions: %s", d)
	}
	// PENDING is an ordinary state here: valid only when named.
	v3 := mustAdd(t, s, k.ID)
	_, err := s.SetVersionState(ctx, k.ID, v3.Version, keystore.Transition{From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDisabled})
	wantErr(t, "SetVersionState of a pending version", err, keystore.ErrConflict)
	if got := mustTransition(t, s, k.ID, v3.Version, keystore.StatePending, keystore.StateDisabled); got.State != keystore.StateDisabled {
		t.Errorf("SetVersionState(PENDING -> DISABLED) = %s", got.State)
	}

	for _, n := range []uint32{0, 99, math.MaxUint32} {
		_, err := s.SetVersionState(ctx, k.ID, n, keystore.Transition{From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDisabled})
		wantErr(t, "SetVersionState of a missing version", err, keystore.ErrNotFound)
	}
}

func testSetVersionStateNotPrimary(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "guarded")
	v2 := mustEnable(t, s, k.ID)
	v3 := mustEnable(t, s, k.ID)
	mustStage(t, s, k.ID, v3.Version, baseTime)
	disable := keystore.Transition{From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDisabled, NotPrimary: true}
	_, err := s.SetVersionState(ctx, k.ID, 1, disable)
	wantErr(t, "SetVersionState(NotPrimary) of the primary", err, keystore.ErrConflict)
	_, err = s.SetVersionState(ctx, k.ID, v3.Version, disable)
	wantErr(t, "SetVersionState(NotPrimary) of the staged primary", err, keystore.ErrConflict)
	for _, n := range []uint32{1, v3.Version} {
		if v := mustVersion(t, s, k.ID, n); v.State != keystore.StateEnabled {
			t.Errorf("version %d is %s after a refused transition, want ENABLED", n, v.State)
		}
	}
	if v, err := s.SetVersionState(ctx, k.ID, v2.Version, disable); err != nil || v.State != keystore.StateDisabled {
		t.Errorf("SetVersionState(NotPrimary) of a version neither primary nor staged = %s, %v", v.State, err)
	}
	// Once promoted, the staged version is the primary, and the old
	// primary may go.
	if _, err := s.PromoteDue(ctx, baseTime); err != nil {
		t.Fatal(err)
	}
	_, err = s.SetVersionState(ctx, k.ID, v3.Version, disable)
	wantErr(t, "SetVersionState(NotPrimary) of the promoted primary", err, keystore.ErrConflict)
	if v, err := s.SetVersionState(ctx, k.ID, 1, disable); err != nil || v.State != keystore.StateDisabled {
		t.Errorf("SetVersionState(NotPrimary) of the former primary = %s, %v", v.State, err)
	}
}

func testLifecycleUnknownKey(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	mustCreateEnabled(t, s, "known")
	id := newKeyID(t)
	_, err := s.UpdateKey(ctx, id, keystore.KeyUpdate{RotationPeriod: ptr(time.Hour)})
	wantErr(t, "UpdateKey of an unknown key", err, keystore.ErrNotFound)
	_, err = s.StagePrimary(ctx, id, 1, baseTime)
	wantErr(t, "StagePrimary of an unknown key", err, keystore.ErrNotFound)
	_, err = s.SetVersionState(ctx, id, 1, keystore.Transition{From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDisabled})
	wantErr(t, "SetVersionState of an unknown key", err, keystore.ErrNotFound)
	_, err = s.ReserveEncryptions(ctx, id, 1, 1)
	wantErr(t, "ReserveEncryptions of an unknown key", err, keystore.ErrNotFound)
	if ok, err := s.ClaimRotation(ctx, id, baseTime, baseTime.Add(time.Hour)); ok || err != nil {
		t.Errorf("ClaimRotation of an unknown key = %t, %v; want false, nil", ok, err)
	}
}
