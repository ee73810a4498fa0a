package keystoretest

import (
	"slices"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// baseTime is the suite's "now": the core's clock is injected, so stores
// never read their own. It has whole microseconds, as databases keep them.
var baseTime = time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.UTC)

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// mustEnable adds a version to the key and commits it without making it
// primary.
func mustEnable(t *testing.T, s keystore.Store, keyID [16]byte) keystore.Version {
	t.Helper()
	_, v := mustCommit(t, s, keyID, mustAdd(t, s, keyID).Version, false)
	return v
}

// mustStage stages a version as the key's primary at the given time.
func mustStage(t *testing.T, s keystore.Store, keyID [16]byte, version uint32, at time.Time) keystore.Key {
	t.Helper()
	k, err := s.StagePrimary(testContext(t), keyID, version, at)
	if err != nil {
		t.Fatalf("StagePrimary(%d): %v", version, err)
	}
	return k
}

// mustVersion returns one version of a key.
func mustVersion(t *testing.T, s keystore.Store, keyID [16]byte, version uint32) keystore.Version {
	t.Helper()
	v, err := s.GetVersion(testContext(t), keyID, version)
	if err != nil {
		t.Fatalf("GetVersion(%d): %v", version, err)
	}
	return v
}

func testRotationSettings(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	in := aesKey("rotating")
	in.RotationPeriod = 90*24*time.Hour + time.Nanosecond // kept exactly
	in.NextRotationTime = baseTime
	in.DestroyDelay = 30 * 24 * time.Hour
	in.PublishLead = 10 * time.Minute
	in.StagedPrimary, in.PromoteTime = 5, baseTime // ignored
	k, _, err := s.CreateKey(ctx, in, newHSMID(t))
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	want := in
	want.ID, want.CreateTime, want.StagedPrimary, want.PromoteTime = k.ID, k.CreateTime, 0, time.Time{}
	if d := sameKey(k, want); d != "" {
		t.Errorf("CreateKey returned key: %s", d)
	}
	if d := sameKey(mustGet(t, s, "rotating"), want); d != "" {
		t.Errorf("GetKey: %s", d)
	}
	keys, err := s.ListKeys(ctx, "", 10)
	if err != nil || len(keys) != 1 {
		t.Fatalf("ListKeys = %v, %v; want one key", keys, err)
	}
	if d := sameKey(keys[0], want); d != "" {
		t.Errorf("ListKeys: %s", d)
	}

	// Zero settings are stored as zero: the core fills in defaults.
	k, _ = mustCreate(t, s, "plain")
	if k.RotationPeriod != 0 || !k.NextRotationTime.IsZero() || k.DestroyDelay != 0 || k.PublishLead != 0 {
		t.Errorf("CreateKey without settings = %+v, want zero settings", k)
	}
	if d := sameKey(mustGet(t, s, "plain"), k); d != "" {
		t.Errorf("GetKey of a key without settings: %s", d)
	}
}

func testUpdateKey(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "update")
	want := k
	want.RotationPeriod, want.NextRotationTime = 24*time.Hour, baseTime
	got, err := s.UpdateKey(ctx, k.ID, keystore.KeyUpdate{RotationPeriod: ptr(24 * time.Hour), NextRotationTime: ptr(baseTime)})
	if err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	if d := sameKey(got, want); d != "" {
		t.Errorf("UpdateKey(rotation) returned: %s", d)
	}
	want.DestroyDelay, want.PublishLead = time.Minute, time.Hour+time.Nanosecond
	got, err = s.UpdateKey(ctx, k.ID, keystore.KeyUpdate{DestroyDelay: ptr(time.Minute), PublishLead: ptr(time.Hour + time.Nanosecond)})
	if err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	if d := sameKey(got, want); d != "" {
		t.Errorf("UpdateKey(delays) returned: %s", d)
	}
	if got, err = s.UpdateKey(ctx, k.ID, keystore.KeyUpdate{}); err != nil {
		t.Fatalf("empty UpdateKey: %v", err)
	}
	if d := sameKey(got, want); d != "" {
		t.Errorf("empty UpdateKey changed the key: %s", d)
	}
	// A pointer to the zero time clears the next rotation.
	want.RotationPeriod, want.NextRotationTime = 0, time.Time{}
	got, err = s.UpdateKey(ctx, k.ID, keystore.KeyUpdate{RotationPeriod: ptr(time.Duration(0)), NextRotationTime: ptr(time.Time{})})
	if err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	if d := sameKey(got, want); d != "" {
		t.Errorf("UpdateKey(no rotation) returned: %s", d)
	}
	if d := sameKey(mustGet(t, s, "update"), want); d != "" {
		t.Errorf("GetKey after UpdateKey: %s", d)
	}
}

func testStagedPromotion(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "staged")
	other := mustCreateEnabled(t, s, "unstaged")
	v2 := mustEnable(t, s, k.ID)
	at := baseTime.Add(10 * time.Minute)
	got := mustStage(t, s, k.ID, v2.Version, at)
	want := k
	want.StagedPrimary, want.PromoteTime = 2, at
	if d := sameKey(got, want); d != "" {
		t.Errorf("StagePrimary returned: %s", d)
	}
	if d := sameKey(mustGet(t, s, "staged"), want); d != "" {
		t.Errorf("GetKey after StagePrimary: %s", d)
	}

	keys, err := s.PromoteDue(ctx, at.Add(-time.Second))
	if err != nil || len(keys) != 0 {
		t.Errorf("PromoteDue before the promote time = %v, %v; want none", keys, err)
	}
	if d := sameKey(mustGet(t, s, "staged"), want); d != "" {
		t.Errorf("GetKey after an early PromoteDue: %s", d)
	}
	keys, err = s.PromoteDue(ctx, at)
	if err != nil || len(keys) != 1 {
		t.Fatalf("PromoteDue at the promote time = %v, %v; want one key", keys, err)
	}
	want.PrimaryVersion, want.StagedPrimary, want.PromoteTime = 2, 0, time.Time{}
	if d := sameKey(keys[0], want); d != "" {
		t.Errorf("PromoteDue returned: %s", d)
	}
	if d := sameKey(mustGet(t, s, "staged"), want); d != "" {
		t.Errorf("GetKey after PromoteDue: %s", d)
	}
	if d := sameKey(mustGet(t, s, "unstaged"), other); d != "" {
		t.Errorf("PromoteDue changed a key with nothing staged: %s", d)
	}
	if keys, err := s.PromoteDue(ctx, at.Add(time.Hour)); err != nil || len(keys) != 0 {
		t.Errorf("second PromoteDue = %v, %v; want none", keys, err)
	}
}

func testStagePrimaryRules(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "rules")
	pending := mustAdd(t, s, k.ID)
	_, err := s.StagePrimary(ctx, k.ID, pending.Version, baseTime)
	wantErr(t, "StagePrimary of a pending version", err, keystore.ErrConflict)
	disabled := mustEnable(t, s, k.ID)
	mustTransition(t, s, k.ID, disabled.Version, keystore.StateEnabled, keystore.StateDisabled)
	_, err = s.StagePrimary(ctx, k.ID, disabled.Version, baseTime)
	wantErr(t, "StagePrimary of a disabled version", err, keystore.ErrConflict)
	_, err = s.StagePrimary(ctx, k.ID, 99, baseTime)
	wantErr(t, "StagePrimary of a missing version", err, keystore.ErrNotFound)
	_, err = s.StagePrimary(ctx, newKeyID(t), 1, baseTime)
	wantErr(t, "StagePrimary of an unknown key", err, keystore.ErrNotFound)

	// Staging the primary, or a version below the staged one, changes
	// nothing.
	if got := mustStage(t, s, k.ID, 1, baseTime); got.StagedPrimary != 0 || !got.PromoteTime.IsZero() {
		t.Errorf("StagePrimary of the primary = staged %d at %v, want none", got.StagedPrimary, got.PromoteTime)
	}
	v4, v5 := mustEnable(t, s, k.ID), mustEnable(t, s, k.ID)
	mustStage(t, s, k.ID, v5.Version, baseTime)
	got := mustStage(t, s, k.ID, v4.Version, baseTime.Add(time.Hour))
	if got.StagedPrimary != v5.Version || !got.PromoteTime.Equal(baseTime) {
		t.Errorf("StagePrimary(%d) after %d = staged %d at %v, want %d at %v",
			v4.Version, v5.Version, got.StagedPrimary, got.PromoteTime, v5.Version, baseTime)
	}
	if k := mustGet(t, s, "rules"); k.StagedPrimary != v5.Version || k.PrimaryVersion != 1 {
		t.Errorf("GetKey = primary %d, staged %d; want 1, %d", k.PrimaryVersion, k.StagedPrimary, v5.Version)
	}
	// A higher version replaces the staged one.
	v6 := mustEnable(t, s, k.ID)
	if got := mustStage(t, s, k.ID, v6.Version, baseTime.Add(time.Minute)); got.StagedPrimary != v6.Version || !got.PromoteTime.Equal(baseTime.Add(time.Minute)) {
		t.Errorf("StagePrimary(%d) = staged %d at %v", v6.Version, got.StagedPrimary, got.PromoteTime)
	}
}

func testCommitClearsStaleStaged(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "stale")
	v2 := mustEnable(t, s, k.ID)
	mustStage(t, s, k.ID, v2.Version, baseTime)
	v3 := mustAdd(t, s, k.ID)
	got, _ := mustCommit(t, s, k.ID, v3.Version, true)
	if got.PrimaryVersion != 3 || got.StagedPrimary != 0 || !got.PromoteTime.IsZero() {
		t.Errorf("CommitVersion(3, primary) = primary %d, staged %d at %v; want 3, none", got.PrimaryVersion, got.StagedPrimary, got.PromoteTime)
	}
	if keys, err := s.PromoteDue(ctx, baseTime); err != nil || len(keys) != 0 {
		t.Errorf("PromoteDue after the staged version was overtaken = %v, %v; want none", keys, err)
	}
	if got := mustGet(t, s, "stale"); got.PrimaryVersion != 3 || got.StagedPrimary != 0 {
		t.Errorf("GetKey = primary %d, staged %d; want 3, 0", got.PrimaryVersion, got.StagedPrimary)
	}

	// A staged version above the new primary stays staged.
	v4, v5 := mustAdd(t, s, k.ID), mustEnable(t, s, k.ID)
	mustStage(t, s, k.ID, v5.Version, baseTime)
	got, _ = mustCommit(t, s, k.ID, v4.Version, true)
	if got.PrimaryVersion != 4 || got.StagedPrimary != 5 || !got.PromoteTime.Equal(baseTime) {
		t.Errorf("CommitVersion(4, primary) with 5 staged = primary %d, staged %d at %v", got.PrimaryVersion, got.StagedPrimary, got.PromoteTime)
	}
	// Committing without primary leaves the staged version alone.
	v6 := mustAdd(t, s, k.ID)
	if got, _ := mustCommit(t, s, k.ID, v6.Version, false); got.StagedPrimary != 5 {
		t.Errorf("CommitVersion(6, not primary) = staged %d, want 5", got.StagedPrimary)
	}
}

func testPromoteDropsDisabledStaged(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "dropped")
	v2 := mustEnable(t, s, k.ID)
	mustStage(t, s, k.ID, v2.Version, baseTime)
	// Without NotPrimary the store does not protect the staged version.
	mustTransition(t, s, k.ID, v2.Version, keystore.StateEnabled, keystore.StateDisabled)
	keys, err := s.PromoteDue(ctx, baseTime)
	if err != nil || len(keys) != 1 {
		t.Fatalf("PromoteDue = %v, %v; want the key, its staged version dropped", keys, err)
	}
	if got := keys[0]; got.ID != k.ID || got.PrimaryVersion != 1 || got.StagedPrimary != 0 || !got.PromoteTime.IsZero() {
		t.Errorf("PromoteDue of a disabled staged version = primary %d, staged %d at %v; want 1, none", got.PrimaryVersion, got.StagedPrimary, got.PromoteTime)
	}
	if got := mustGet(t, s, "dropped"); got.PrimaryVersion != 1 || got.StagedPrimary != 0 {
		t.Errorf("GetKey = primary %d, staged %d; want 1, 0", got.PrimaryVersion, got.StagedPrimary)
	}
}

// mustTransition moves a version from one state to another.
func mustTransition(t *testing.T, s keystore.Store, keyID [16]byte, version uint32, from, to keystore.State) keystore.Version {
	t.Helper()
	v, err := s.SetVersionState(testContext(t), keyID, version, keystore.Transition{From: []keystore.State{from}, To: to})
	if err != nil {
		t.Fatalf("SetVersionState(%d, %s -> %s): %v", version, from, to, err)
	}
	return v
}

func testListVersionsByState(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	a := mustCreateEnabled(t, s, "a")
	b := mustCreateEnabled(t, s, "b")
	// Scheduled out of creation order, with destroy times out of order.
	var created []keystore.Version
	for _, keyID := range [][16]byte{b.ID, a.ID, b.ID, a.ID} {
		created = append(created, mustEnable(t, s, keyID))
	}
	ats := []time.Time{baseTime.Add(3 * time.Hour), baseTime.Add(time.Hour), baseTime, baseTime.Add(2 * time.Hour)}
	for _, i := range []int{2, 0, 3, 1} {
		v := created[i]
		got, err := s.SetVersionState(ctx, v.KeyID, v.Version, keystore.Transition{
			From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDestroyScheduled, DestroyTime: ats[i],
		})
		if err != nil {
			t.Fatalf("SetVersionState: %v", err)
		}
		created[i] = got
	}
	pending := mustAdd(t, s, a.ID)
	// Oldest first. Versions made within a microsecond tie on creation
	// time; then the key ID decides.
	slices.SortFunc(created, func(x, y keystore.Version) int {
		if c := x.CreateTime.Compare(y.CreateTime); c != 0 {
			return c
		}
		if c := compareIDs(x.KeyID, y.KeyID); c != 0 {
			return c
		}
		return int(x.Version) - int(y.Version)
	})
	sameList := func(call string, got, want []keystore.Version) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s returned %d versions, want %d", call, len(got), len(want))
			return
		}
		for i := range got {
			if d := sameVersion(got[i], want[i]); d != "" {
				t.Errorf("%s[%d]: %s", call, i, d)
			}
		}
	}

	list := func(state keystore.State, dueBy time.Time, limit int) []keystore.Version {
		t.Helper()
		vs, err := s.ListVersionsByState(ctx, state, dueBy, limit)
		if err != nil {
			t.Fatalf("ListVersionsByState(%s, %v, %d): %v", state, dueBy, limit, err)
		}
		return vs
	}
	sameList("ListVersionsByState(DESTROY_SCHEDULED)", list(keystore.StateDestroyScheduled, time.Time{}, 10), created)
	sameList("ListVersionsByState(limit 2)", list(keystore.StateDestroyScheduled, time.Time{}, 2), created[:2])
	dueBy := baseTime.Add(time.Hour)
	var due []keystore.Version
	for _, v := range created {
		if !v.DestroyTime.After(dueBy) {
			due = append(due, v)
		}
	}
	if len(due) != 2 {
		t.Fatalf("%d versions due by +1h, want 2", len(due))
	}
	sameList("ListVersionsByState(due by +1h)", list(keystore.StateDestroyScheduled, dueBy, 10), due)
	if got := list(keystore.StateDestroyScheduled, baseTime.Add(-time.Microsecond), 10); len(got) != 0 {
		t.Errorf("ListVersionsByState(due before any) = %v, want none", got)
	}
	if got := list(keystore.StatePending, time.Time{}, 10); len(got) != 1 || got[0].Version != pending.Version || got[0].KeyID != a.ID {
		t.Errorf("ListVersionsByState(PENDING) = %v, want version %d of a", got, pending.Version)
	}
	// A version without a destroy time is never due.
	if got := list(keystore.StatePending, baseTime.Add(1000*time.Hour), 10); len(got) != 0 {
		t.Errorf("ListVersionsByState(PENDING, due by) = %v, want none", got)
	}
	enabled := list(keystore.StateEnabled, time.Time{}, 10)
	if got := versionNumbers(enabled); !slices.Equal(got, []uint32{1, 1}) {
		t.Errorf("ListVersionsByState(ENABLED) = versions %v, want [1 1]", got)
	}
	if got := list(keystore.StateDestroyed, time.Time{}, 10); len(got) != 0 {
		t.Errorf("ListVersionsByState(DESTROYED) = %v, want none", got)
	}
	for _, limit := range []int{0, -1} {
		if got := list(keystore.StateDestroyScheduled, time.Time{}, limit); len(got) != 0 {
			t.Errorf("ListVersionsByState(limit %d) = %v, want none", limit, got)
		}
	}
}
