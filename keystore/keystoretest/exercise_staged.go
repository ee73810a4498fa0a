package keystoretest

import (
	"errors"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// testCommitStaged checks that CommitStaged enables and stages a version in
// one step, stages only a higher version, and refuses a non-pending one.
func testCommitStaged(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "commit-staged")
	v2, err := s.AddVersion(ctx, k.ID, newHSMID(t))
	if err != nil {
		t.Fatal(err)
	}
	at := baseTime.Add(10 * time.Minute)
	got, v, err := s.CommitStaged(ctx, k.ID, v2.Version, []byte("pub"), at)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != keystore.StateEnabled || string(v.PublicKey) != "pub" {
		t.Errorf("version after CommitStaged = %+v", v)
	}
	if got.PrimaryVersion != 1 || got.StagedPrimary != v2.Version || !got.PromoteTime.Equal(at) {
		t.Errorf("key after CommitStaged = primary %d, staged %d at %v", got.PrimaryVersion, got.StagedPrimary, got.PromoteTime)
	}
	if _, _, err := s.CommitStaged(ctx, k.ID, v2.Version, nil, at); !errors.Is(err, keystore.ErrConflict) {
		t.Errorf("CommitStaged twice = %v, want ErrConflict", err)
	}
	if _, _, err := s.CommitStaged(ctx, k.ID, 99, nil, at); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("CommitStaged of an unknown version = %v, want ErrNotFound", err)
	}
	// A lower version than the staged one is enabled but not staged.
	v3, _ := s.AddVersion(ctx, k.ID, newHSMID(t))
	v4, _ := s.AddVersion(ctx, k.ID, newHSMID(t))
	if _, _, err := s.CommitStaged(ctx, k.ID, v4.Version, nil, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, _, err = s.CommitStaged(ctx, k.ID, v3.Version, nil, at.Add(2*time.Minute))
	if err != nil || got.StagedPrimary != v4.Version {
		t.Errorf("staging v3 below staged v4: staged %d, %v", got.StagedPrimary, err)
	}
}
