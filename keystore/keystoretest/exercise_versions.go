package keystoretest

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/sigil-kms/sigil/keystore"
)

// versionNumbers returns the numbers of vs.
func versionNumbers(vs []keystore.Version) []uint32 {
	var ns []uint32
	for _, v := range vs {
		ns = append(ns, v.Version)
	}
	return ns
}

// mustListVersions returns all versions of a key, one page.
func mustListVersions(t *testing.T, s keystore.Store, keyID [16]byte) []keystore.Version {
	t.Helper()
	vs, err := s.ListVersions(testContext(t), keyID, 0, 1000)
	if err != nil {
		t.Fatalf("ListVersions: %v", err)
	}
	return vs
}

func testCommitFirstVersion(t *testing.T, s keystore.Store) {
	k, v := mustCreate(t, s, "first")
	if k.PrimaryVersion != 0 {
		t.Errorf("new key has primary version %d, want 0", k.PrimaryVersion)
	}
	k, v2 := mustCommit(t, s, k.ID, 1, true)
	if k.PrimaryVersion != 1 {
		t.Errorf("CommitVersion(1, primary) returned primary version %d, want 1", k.PrimaryVersion)
	}
	want := v
	want.State = keystore.StateEnabled
	if d := sameVersion(v2, want); d != "" {
		t.Errorf("CommitVersion returned version: %s", d)
	}
	if got := mustGet(t, s, "first"); got.PrimaryVersion != 1 {
		t.Errorf("GetKey after commit: primary version %d, want 1", got.PrimaryVersion)
	}
	got, err := s.GetVersion(testContext(t), k.ID, 1)
	if err != nil {
		t.Fatalf("GetVersion: %v", err)
	}
	if d := sameVersion(got, want); d != "" {
		t.Errorf("GetVersion after commit: %s", d)
	}
}

func testCommitTwice(t *testing.T, s keystore.Store) {
	k := mustCreateEnabled(t, s, "twice")
	for _, primary := range []bool{true, false} {
		_, _, err := s.CommitVersion(testContext(t), k.ID, 1, nil, primary)
		wantErr(t, "second CommitVersion", err, keystore.ErrConflict)
	}
}

func testAddVersionNumbering(t *testing.T, s keystore.Store) {
	k, _ := mustCreate(t, s, "numbered")
	for want := uint32(2); want <= 4; want++ {
		v := mustAdd(t, s, k.ID)
		if v.Version != want || v.State != keystore.StatePending || v.KeyID != k.ID {
			t.Errorf("AddVersion = version %d %s of %x, want %d %s of %x",
				v.Version, v.State, v.KeyID, want, keystore.StatePending, k.ID)
		}
	}
	if got := versionNumbers(mustListVersions(t, s, k.ID)); !slices.Equal(got, []uint32{1, 2, 3, 4}) {
		t.Errorf("ListVersions = %v, want [1 2 3 4]", got)
	}
	// Adding versions does not change the primary.
	if got := mustGet(t, s, "numbered"); got.PrimaryVersion != 0 {
		t.Errorf("primary version %d after adding pending versions, want 0", got.PrimaryVersion)
	}
}

func testCommitNonPrimary(t *testing.T, s keystore.Store) {
	k := mustCreateEnabled(t, s, "non-primary")
	v := mustAdd(t, s, k.ID)
	k2, v2 := mustCommit(t, s, k.ID, v.Version, false)
	if k2.PrimaryVersion != 1 {
		t.Errorf("CommitVersion(2, not primary) returned primary version %d, want 1", k2.PrimaryVersion)
	}
	if v2.State != keystore.StateEnabled {
		t.Errorf("CommitVersion(2, not primary) returned state %s, want %s", v2.State, keystore.StateEnabled)
	}
	if got := mustGet(t, s, "non-primary"); got.PrimaryVersion != 1 {
		t.Errorf("GetKey: primary version %d, want 1", got.PrimaryVersion)
	}
}

func testPrimaryNeverDecreases(t *testing.T, s keystore.Store) {
	k := mustCreateEnabled(t, s, "greatest")
	mustAdd(t, s, k.ID)
	mustAdd(t, s, k.ID)
	if k, _ := mustCommit(t, s, k.ID, 3, true); k.PrimaryVersion != 3 {
		t.Errorf("CommitVersion(3, primary) returned primary version %d, want 3", k.PrimaryVersion)
	}
	k2, v2 := mustCommit(t, s, k.ID, 2, true)
	if k2.PrimaryVersion != 3 {
		t.Errorf("CommitVersion(2, primary) after 3 returned primary version %d, want 3", k2.PrimaryVersion)
	}
	if v2.State != keystore.StateEnabled {
		t.Errorf("CommitVersion(2, primary) returned state %s, want %s", v2.State, keystore.StateEnabled)
	}
	if got := mustGet(t, s, "greatest"); got.PrimaryVersion != 3 {
		t.Errorf("GetKey: primary version %d, want 3", got.PrimaryVersion)
	}
}

func testAbortThenAdd(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "abort")
	v := mustAdd(t, s, k.ID)
	if err := s.AbortVersion(ctx, k.ID, v.Version); err != nil {
		t.Fatalf("AbortVersion(%d): %v", v.Version, err)
	}
	_, err := s.GetVersion(ctx, k.ID, v.Version)
	wantErr(t, "GetVersion of an aborted version", err, keystore.ErrNotFound)
	if v3 := mustAdd(t, s, k.ID); v3.Version != 3 {
		t.Errorf("AddVersion after aborting version 2 = %d, want 3 (numbers are never reused)", v3.Version)
	}
	if got := versionNumbers(mustListVersions(t, s, k.ID)); !slices.Equal(got, []uint32{1, 3}) {
		t.Errorf("ListVersions = %v, want [1 3]", got)
	}
	if got := mustGet(t, s, "abort"); got.PrimaryVersion != 1 {
		t.Errorf("GetKey: primary version %d, want 1", got.PrimaryVersion)
	}
}

func testAbortLastVersionDeletesKey(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k, _ := mustCreate(t, s, "failed")
	if err := s.AbortVersion(ctx, k.ID, 1); err != nil {
		t.Fatalf("AbortVersion(1): %v", err)
	}
	_, err := s.GetKey(ctx, "failed")
	wantErr(t, "GetKey after aborting its only version", err, keystore.ErrNotFound)
	_, err = s.ListVersions(ctx, k.ID, 0, 10)
	wantErr(t, "ListVersions after aborting its only version", err, keystore.ErrNotFound)
	_, err = s.AddVersion(ctx, k.ID, newHSMID(t))
	wantErr(t, "AddVersion after aborting its only version", err, keystore.ErrNotFound)
	// The name is free again.
	k2, v2 := mustCreate(t, s, "failed")
	if k2.ID == k.ID || v2.Version != 1 {
		t.Errorf("re-created key: ID %x (old %x), version %d", k2.ID, k.ID, v2.Version)
	}

	// A key with versions left survives the abort of its first version.
	k3, _ := mustCreate(t, s, "survivor")
	mustAdd(t, s, k3.ID)
	if err := s.AbortVersion(ctx, k3.ID, 1); err != nil {
		t.Fatalf("AbortVersion(1) with version 2 pending: %v", err)
	}
	mustGet(t, s, "survivor")
}

func testAbortNotPending(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "enabled")
	err := s.AbortVersion(ctx, k.ID, 1)
	wantErr(t, "AbortVersion of an enabled version", err, keystore.ErrConflict)
	err = s.AbortVersion(ctx, k.ID, 2)
	wantErr(t, "AbortVersion of a missing version", err, keystore.ErrNotFound)
	if _, err := s.GetVersion(ctx, k.ID, 1); err != nil {
		t.Errorf("GetVersion(1) after a refused abort: %v", err)
	}
}

func testListVersionsPagination(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k, _ := mustCreate(t, s, "paged")
	for range 6 {
		mustAdd(t, s, k.ID)
	}
	if err := s.AbortVersion(ctx, k.ID, 4); err != nil {
		t.Fatalf("AbortVersion(4): %v", err)
	}
	var pages [][]uint32
	after := uint32(0)
	for len(pages) <= 7 {
		vs, err := s.ListVersions(ctx, k.ID, after, 2)
		if err != nil {
			t.Fatalf("ListVersions(%d, 2): %v", after, err)
		}
		if len(vs) == 0 {
			break
		}
		for _, v := range vs {
			if v.KeyID != k.ID {
				t.Errorf("ListVersions returned a version of key %x", v.KeyID)
			}
		}
		pages = append(pages, versionNumbers(vs))
		after = vs[len(vs)-1].Version
	}
	want := [][]uint32{{1, 2}, {3, 5}, {6, 7}}
	if !slices.EqualFunc(pages, want, slices.Equal) {
		t.Errorf("ListVersions pages %v, want %v", pages, want)
	}
	if vs, err := s.ListVersions(ctx, k.ID, 0, 0); err != nil || len(vs) != 0 {
		t.Errorf("ListVersions(limit 0) = %v, %v; want none", vs, err)
	}
	if vs, err := s.ListVersions(ctx, k.ID, math.MaxUint32, 10); err != nil || len(vs) != 0 {
		t.Errorf("ListVersions(after MaxUint32) = %v, %v; want none", vs, err)
	}
}

func testUnknownKey(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	mustCreateEnabled(t, s, "known")
	id := newKeyID(t)
	_, err := s.AddVersion(ctx, id, newHSMID(t))
	wantErr(t, "AddVersion of an unknown key", err, keystore.ErrNotFound)
	_, err = s.GetVersion(ctx, id, 1)
	wantErr(t, "GetVersion of an unknown key", err, keystore.ErrNotFound)
	_, err = s.ListVersions(ctx, id, 0, 10)
	wantErr(t, "ListVersions of an unknown key", err, keystore.ErrNotFound)
	_, _, err = s.CommitVersion(ctx, id, 1, nil, true)
	wantErr(t, "CommitVersion of an unknown key", err, keystore.ErrNotFound)
	err = s.AbortVersion(ctx, id, 1)
	wantErr(t, "AbortVersion of an unknown key", err, keystore.ErrNotFound)
}

func testUnknownVersion(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateEnabled(t, s, "versions")
	for _, n := range []uint32{0, 2, math.MaxInt32, math.MaxInt32 + 1, math.MaxUint32} {
		_, err := s.GetVersion(ctx, k.ID, n)
		wantErr(t, "GetVersion of a missing version", err, keystore.ErrNotFound)
		_, _, err = s.CommitVersion(ctx, k.ID, n, nil, true)
		wantErr(t, "CommitVersion of a missing version", err, keystore.ErrNotFound)
		err = s.AbortVersion(ctx, k.ID, n)
		wantErr(t, "AbortVersion of a missing version", err, keystore.ErrNotFound)
	}
	if got := mustGet(t, s, "versions"); got.PrimaryVersion != 1 {
		t.Errorf("primary version %d after failed commits, want 1", got.PrimaryVersion)
	}
}

func testConcurrentAddVersion(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k, _ := mustCreate(t, s, "concurrent")
	const n = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		numbers []uint32
		start   = make(chan struct{})
	)
	for range n {
		hsmID := newHSMID(t)
		wg.Go(func() {
			<-start
			v, err := s.AddVersion(ctx, k.ID, hsmID)
			if err != nil {
				t.Errorf("concurrent AddVersion: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			numbers = append(numbers, v.Version)
		})
	}
	close(start)
	wg.Wait()
	slices.Sort(numbers)
	var want []uint32
	for i := range uint32(n) {
		want = append(want, i+2)
	}
	if !slices.Equal(numbers, want) {
		t.Errorf("concurrent AddVersion numbers %v, want %v", numbers, want)
	}
	if got := versionNumbers(mustListVersions(t, s, k.ID)); len(got) != n+1 {
		t.Errorf("ListVersions after concurrent adds: %v", got)
	}
}

func testHSMIDRoundTrip(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	ids := [][]byte{
		{0x00, 0xff, 0x00, 0x80, 0x7f, 0x01, 0xfe, 0x00, 0x00, 0x0a, 0x0d, 0x5c, 0x27, 0x22, 0xc3, 0x28},
		bytes.Repeat([]byte{0}, 16),
		append(newHSMID(t), newHSMID(t)...), // longer than the core's 16
	}
	in := slices.Clone(ids[0])
	k, v1, err := s.CreateKey(ctx, aesKey("hsm-ids"), in)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	in[0] = 0x42 // the store kept its own copy
	got := []keystore.Version{v1}
	for _, id := range ids[1:] {
		v, err := s.AddVersion(ctx, k.ID, slices.Clone(id))
		if err != nil {
			t.Fatalf("AddVersion: %v", err)
		}
		got = append(got, v)
	}
	listed := mustListVersions(t, s, k.ID)
	if len(listed) != len(ids) {
		t.Fatalf("ListVersions returned %d versions, want %d", len(listed), len(ids))
	}
	for i, id := range ids {
		v, err := s.GetVersion(ctx, k.ID, uint32(i+1))
		if err != nil {
			t.Fatalf("GetVersion(%d): %v", i+1, err)
		}
		for _, c := range []struct {
			how string
			got []byte
		}{{"returned", got[i].HSMID}, {"GetVersion", v.HSMID}, {"ListVersions", listed[i].HSMID}} {
			if !bytes.Equal(c.got, id) {
				t.Errorf("version %d: %s HSM ID %x, want %x", i+1, c.how, c.got, id)
			}
		}
		v.HSMID[0] ^= 0xff // the caller's copy is its own
	}
	if v, err := s.GetVersion(ctx, k.ID, 1); err != nil || !bytes.Equal(v.HSMID, ids[0]) {
		t.Errorf("GetVersion(1) after changing returned copies = %x, %v; want %x", v.HSMID, err, ids[0])
	}
}

func testDuplicateHSMID(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k, v1 := mustCreate(t, s, "hsm-a")
	_, err := s.AddVersion(ctx, k.ID, v1.HSMID)
	if err == nil {
		t.Fatal("AddVersion with an HSM ID already recorded succeeded")
	}
	for _, sentinel := range []error{keystore.ErrExists, keystore.ErrNotFound, keystore.ErrConflict, keystore.ErrUnavailable} {
		if errors.Is(err, sentinel) {
			t.Errorf("AddVersion with a duplicate HSM ID: error %v wraps %v; it is an internal error", err, sentinel)
		}
	}
	_, _, err = s.CreateKey(ctx, aesKey("hsm-b"), v1.HSMID)
	if err == nil {
		t.Fatal("CreateKey with an HSM ID already recorded succeeded")
	}
	_, err = s.GetKey(ctx, "hsm-b")
	wantErr(t, "GetKey of a key whose creation failed", err, keystore.ErrNotFound)
	if got := versionNumbers(mustListVersions(t, s, k.ID)); !slices.Equal(got, []uint32{1}) {
		t.Errorf("ListVersions after a failed AddVersion = %v, want [1]", got)
	}
}
