package keystoretest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// testTimeout bounds each call of the suite, so that a hung store fails the
// test instead of blocking it.
const testTimeout = 30 * time.Second

// Exercise runs the conformance suite for keystore.Store on the stores that
// newStore returns. It calls newStore once per subtest and expects an empty
// store each time; newStore should register its own cleanup (t.Cleanup).
// The tests about replicas sharing a database run with one store in both
// roles; ExerciseReplicas runs them with two.
func Exercise(t *testing.T, newStore func(t *testing.T) keystore.Store) {
	t.Helper()
	tests := []struct {
		name string
		test func(t *testing.T, s keystore.Store)
	}{
		{"CreateAndGet", testCreateAndGet},
		{"CreateKeepsGivenID", testCreateKeepsGivenID},
		{"DuplicateName", testDuplicateName},
		{"GetUnknownKey", testGetUnknownKey},
		{"Labels", testLabels},
		{"CreateTime", testCreateTime},
		{"ListKeysPagination", testListKeysPagination},
		{"ListKeysOrderIsBytewise", testListKeysOrder},
		{"ContextCancelled", testContextCancelled},
		{"CommitFirstVersion", testCommitFirstVersion},
		{"CommitTwice", testCommitTwice},
		{"AddVersionNumbering", testAddVersionNumbering},
		{"CommitNonPrimary", testCommitNonPrimary},
		{"PrimaryNeverDecreases", testPrimaryNeverDecreases},
		{"AbortThenAddDoesNotReuse", testAbortThenAdd},
		{"AbortLastVersionDeletesKey", testAbortLastVersionDeletesKey},
		{"AbortNotPending", testAbortNotPending},
		{"ListVersionsPagination", testListVersionsPagination},
		{"UnknownKey", testUnknownKey},
		{"UnknownVersion", testUnknownVersion},
		{"ConcurrentAddVersion", testConcurrentAddVersion},
		{"HSMIDRoundTrip", testHSMIDRoundTrip},
		{"DuplicateHSMID", testDuplicateHSMID},
		{"PublicKeyRoundTrip", testPublicKeyRoundTrip},
		{"NilPublicKey", testNilPublicKey},
		{"ListPublicKeys", testListPublicKeys},
		{"ListPublicKeysEmpty", testListPublicKeysEmpty},
		{"RotationSettings", testRotationSettings},
		{"UpdateKey", testUpdateKey},
		{"StagedPromotion", testStagedPromotion},
		{"CommitStaged", testCommitStaged},
		{"StagePrimaryRules", testStagePrimaryRules},
		{"CommitClearsStaleStaged", testCommitClearsStaleStaged},
		{"PromoteDropsDisabledStaged", testPromoteDropsDisabledStaged},
		{"SetVersionState", testSetVersionState},
		{"SetVersionStateNotPrimary", testSetVersionStateNotPrimary},
		{"ListVersionsByState", testListVersionsByState},
		{"ListDueRotations", testListDueRotations},
		{"ClaimRotation", testClaimRotation},
		{"ReserveEncryptions", testReserveEncryptions},
		{"LifecycleUnknownKey", testLifecycleUnknownKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.test(t, newStore(t))
		})
	}
	for _, tc := range replicaTests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			tc.test(t, s, s)
		})
	}
}

// replicaTests are the tests of stores that share a database: each gets
// two, a and b, which may be one and the same.
var replicaTests = []struct {
	name string
	test func(t *testing.T, a, b keystore.Store)
}{
	{"WatchDelivers", testWatchDelivers},
	{"WatchStops", testWatchStops},
	{"RunExclusive", testRunExclusive},
	{"ClaimRotationRace", testClaimRotationRace},
	{"ConcurrentReserveEncryptions", testConcurrentReserve},
}

// ExerciseReplicas runs the tests about replicas sharing a database on the
// pairs of stores that newReplicas returns: two stores on one new, empty
// database, cleaned up by newReplicas (t.Cleanup).
func ExerciseReplicas(t *testing.T, newReplicas func(t *testing.T) (a, b keystore.Store)) {
	t.Helper()
	for _, tc := range replicaTests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newReplicas(t)
			tc.test(t, a, b)
		})
	}
}

// testContext returns a context for one test that ends with it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newHSMID returns a random HSM identifier, as the core makes them.
func newHSMID(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// newKeyID returns a random key ID.
func newKeyID(t *testing.T) [16]byte {
	t.Helper()
	var id [16]byte
	copy(id[:], newHSMID(t))
	return id
}

// aesKey returns the Key to create under name.
func aesKey(name string) keystore.Key {
	return keystore.Key{Name: name, Purpose: keystore.PurposeEncryptDecrypt, Algorithm: keystore.AES256GCM}
}

// mustCreate creates an AES key named name with a pending version 1.
func mustCreate(t *testing.T, s keystore.Store, name string) (keystore.Key, keystore.Version) {
	t.Helper()
	k, v, err := s.CreateKey(testContext(t), aesKey(name), newHSMID(t))
	if err != nil {
		t.Fatalf("CreateKey(%q): %v", name, err)
	}
	return k, v
}

// mustCreateEnabled creates a key whose version 1 is committed as primary.
func mustCreateEnabled(t *testing.T, s keystore.Store, name string) keystore.Key {
	t.Helper()
	k, _ := mustCreate(t, s, name)
	k, _ = mustCommit(t, s, k.ID, 1, true)
	return k
}

// mustAdd adds a pending version to the key.
func mustAdd(t *testing.T, s keystore.Store, keyID [16]byte) keystore.Version {
	t.Helper()
	v, err := s.AddVersion(testContext(t), keyID, newHSMID(t))
	if err != nil {
		t.Fatalf("AddVersion: %v", err)
	}
	return v
}

// mustCommit commits a version without a public key.
func mustCommit(t *testing.T, s keystore.Store, keyID [16]byte, version uint32, primary bool) (keystore.Key, keystore.Version) {
	t.Helper()
	k, v, err := s.CommitVersion(testContext(t), keyID, version, nil, primary)
	if err != nil {
		t.Fatalf("CommitVersion(%d, primary=%t): %v", version, primary, err)
	}
	return k, v
}

// mustGet returns the key named name.
func mustGet(t *testing.T, s keystore.Store, name string) keystore.Key {
	t.Helper()
	k, err := s.GetKey(testContext(t), name)
	if err != nil {
		t.Fatalf("GetKey(%q): %v", name, err)
	}
	return k
}

// wantErr fails the test unless errors.Is(err, target).
func wantErr(t *testing.T, call string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want one wrapping %v", call, err, target)
	}
}

// sameKey reports how a and b differ, or "" if they do not. Empty and nil
// labels are the same.
func sameKey(a, b keystore.Key) string {
	switch {
	case a.ID != b.ID:
		return fmt.Sprintf("ID %x != %x", a.ID, b.ID)
	case a.Name != b.Name, a.Purpose != b.Purpose, a.Algorithm != b.Algorithm:
		return fmt.Sprintf("%q %s %s != %q %s %s", a.Name, a.Purpose, a.Algorithm, b.Name, b.Purpose, b.Algorithm)
	case a.PrimaryVersion != b.PrimaryVersion:
		return fmt.Sprintf("primary version %d != %d", a.PrimaryVersion, b.PrimaryVersion)
	case !maps.Equal(a.Labels, b.Labels):
		return fmt.Sprintf("labels %v != %v", a.Labels, b.Labels)
	case !a.CreateTime.Equal(b.CreateTime):
		return fmt.Sprintf("create time %v != %v", a.CreateTime, b.CreateTime)
	case a.RotationPeriod != b.RotationPeriod || !a.NextRotationTime.Equal(b.NextRotationTime):
		return fmt.Sprintf("rotation every %v next at %v != every %v next at %v",
			a.RotationPeriod, a.NextRotationTime, b.RotationPeriod, b.NextRotationTime)
	case a.DestroyDelay != b.DestroyDelay || a.PublishLead != b.PublishLead:
		return fmt.Sprintf("destroy delay %v, publish lead %v != %v, %v", a.DestroyDelay, a.PublishLead, b.DestroyDelay, b.PublishLead)
	case a.StagedPrimary != b.StagedPrimary || !a.PromoteTime.Equal(b.PromoteTime):
		return fmt.Sprintf("staged primary %d at %v != %d at %v", a.StagedPrimary, a.PromoteTime, b.StagedPrimary, b.PromoteTime)
	}
	return ""
}

// sameVersion reports how a and b differ, or "" if they do not.
func sameVersion(a, b keystore.Version) string {
	switch {
	case a.KeyID != b.KeyID:
		return fmt.Sprintf("key ID %x != %x", a.KeyID, b.KeyID)
	case a.Version != b.Version || a.State != b.State:
		return fmt.Sprintf("version %d %s != %d %s", a.Version, a.State, b.Version, b.State)
	case !bytes.Equal(a.HSMID, b.HSMID):
		return fmt.Sprintf("HSM ID %x != %x", a.HSMID, b.HSMID)
	case !bytes.Equal(a.PublicKey, b.PublicKey) || (a.PublicKey == nil) != (b.PublicKey == nil):
		return fmt.Sprintf("public key %x (nil %t) != %x (nil %t)", a.PublicKey, a.PublicKey == nil, b.PublicKey, b.PublicKey == nil)
	case !a.CreateTime.Equal(b.CreateTime):
		return fmt.Sprintf("create time %v != %v", a.CreateTime, b.CreateTime)
	case !a.DestroyTime.Equal(b.DestroyTime) || a.EncryptCount != b.EncryptCount:
		return fmt.Sprintf("destroy time %v, encrypt count %d != %v, %d", a.DestroyTime, a.EncryptCount, b.DestroyTime, b.EncryptCount)
	}
	return ""
}

func testCreateAndGet(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	hsmID := newHSMID(t)
	in := keystore.Key{
		Name:           "signer_1-A",
		Purpose:        keystore.PurposeSignVerify,
		Algorithm:      "EC_P256_SHA256",
		PrimaryVersion: 7, // ignored
	}
	k, v, err := s.CreateKey(ctx, in, hsmID)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if k.ID == ([16]byte{}) {
		t.Error("CreateKey with a zero ID: returned key has a zero ID, want a random one")
	}
	want := in
	want.ID, want.PrimaryVersion, want.CreateTime = k.ID, 0, k.CreateTime
	if d := sameKey(k, want); d != "" {
		t.Errorf("CreateKey returned key: %s", d)
	}
	wantV := keystore.Version{KeyID: k.ID, Version: 1, State: keystore.StatePending, HSMID: hsmID, CreateTime: v.CreateTime}
	if d := sameVersion(v, wantV); d != "" {
		t.Errorf("CreateKey returned version: %s", d)
	}
	if d := sameKey(mustGet(t, s, in.Name), k); d != "" {
		t.Errorf("GetKey after CreateKey: %s", d)
	}
	got, err := s.GetVersion(ctx, k.ID, 1)
	if err != nil {
		t.Fatalf("GetVersion(1): %v", err)
	}
	if d := sameVersion(got, v); d != "" {
		t.Errorf("GetVersion after CreateKey: %s", d)
	}
}

func testCreateKeepsGivenID(t *testing.T, s keystore.Store) {
	in := aesKey("given-id")
	in.ID = newKeyID(t)
	k, v, err := s.CreateKey(testContext(t), in, newHSMID(t))
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if k.ID != in.ID || v.KeyID != in.ID {
		t.Errorf("CreateKey with ID %x: key ID %x, version's key ID %x", in.ID, k.ID, v.KeyID)
	}
	if got := mustGet(t, s, in.Name); got.ID != in.ID {
		t.Errorf("GetKey: ID %x, want %x", got.ID, in.ID)
	}
}

func testDuplicateName(t *testing.T, s keystore.Store) {
	first, _ := mustCreate(t, s, "dup")
	in := keystore.Key{Name: "dup", Purpose: keystore.PurposeSignVerify, Algorithm: "ED25519"}
	_, _, err := s.CreateKey(testContext(t), in, newHSMID(t))
	wantErr(t, "CreateKey with a taken name", err, keystore.ErrExists)
	if d := sameKey(mustGet(t, s, "dup"), first); d != "" {
		t.Errorf("GetKey after the duplicate CreateKey: %s", d)
	}
}

func testGetUnknownKey(t *testing.T, s keystore.Store) {
	mustCreate(t, s, "known")
	_, err := s.GetKey(testContext(t), "unknown")
	wantErr(t, "GetKey(unknown)", err, keystore.ErrNotFound)
}

func testLabels(t *testing.T, s keystore.Store) {
	k, _ := mustCreate(t, s, "no-labels")
	if k.Labels != nil {
		t.Errorf("CreateKey with nil labels returned labels %#v, want nil", k.Labels)
	}
	if got := mustGet(t, s, "no-labels"); got.Labels != nil {
		t.Errorf("GetKey of a key without labels: labels %#v, want nil", got.Labels)
	}
	in := aesKey("empty-labels")
	in.Labels = map[string]string{}
	if k, _, err := s.CreateKey(testContext(t), in, newHSMID(t)); err != nil || k.Labels != nil {
		t.Errorf("CreateKey with empty labels = labels %#v, %v; want nil", k.Labels, err)
	}

	labels := map[string]string{"team": "payments", "env": "prod", "note": "ünïcode \"quoted\"", "empty": ""}
	in = aesKey("labelled")
	in.Labels = maps.Clone(labels)
	k, _, err := s.CreateKey(testContext(t), in, newHSMID(t))
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if !maps.Equal(k.Labels, labels) {
		t.Errorf("CreateKey returned labels %v, want %v", k.Labels, labels)
	}
	// Neither the caller's map nor a returned one aliases the store's.
	in.Labels["team"] = "changed"
	k.Labels["env"] = "changed"
	got := mustGet(t, s, "labelled")
	if !maps.Equal(got.Labels, labels) {
		t.Errorf("GetKey returned labels %v, want %v", got.Labels, labels)
	}
}

func testCreateTime(t *testing.T, s keystore.Store) {
	before := time.Now()
	k, v1 := mustCreate(t, s, "timed")
	v2 := mustAdd(t, s, k.ID)
	after := time.Now()
	// The database's clock may differ a little from this one.
	const skew = 5 * time.Minute
	for _, c := range []struct {
		what string
		ts   time.Time
	}{{"key", k.CreateTime}, {"version 1", v1.CreateTime}, {"version 2", v2.CreateTime}} {
		if c.ts.Before(before.Add(-skew)) || c.ts.After(after.Add(skew)) {
			t.Errorf("%s create time %v, want between %v and %v", c.what, c.ts, before, after)
		}
	}
	if v2.CreateTime.Before(v1.CreateTime) {
		t.Errorf("version 2 created at %v, before version 1 at %v", v2.CreateTime, v1.CreateTime)
	}
	if got := mustGet(t, s, "timed"); !got.CreateTime.Equal(k.CreateTime) {
		t.Errorf("GetKey create time %v, CreateKey said %v", got.CreateTime, k.CreateTime)
	}
}

func testListKeysPagination(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	const n = 25
	var names []string
	for _, i := range mrand.Perm(n) { // created out of order
		names = append(names, fmt.Sprintf("key-%02d", i))
		mustCreate(t, s, names[len(names)-1])
	}
	var got []string
	after := ""
	for page := 0; ; page++ {
		if page > n {
			t.Fatalf("ListKeys: no end after %d pages", page)
		}
		keys, err := s.ListKeys(ctx, after, 10)
		if err != nil {
			t.Fatalf("ListKeys(%q, 10): %v", after, err)
		}
		if len(keys) > 10 {
			t.Fatalf("ListKeys(%q, 10) returned %d keys", after, len(keys))
		}
		if len(keys) == 0 {
			break
		}
		for _, k := range keys {
			got = append(got, k.Name)
		}
		after = keys[len(keys)-1].Name
	}
	if len(got) != n {
		t.Fatalf("ListKeys pages returned %d keys, want %d: %q", len(got), n, got)
	}
	for i, name := range got {
		if want := fmt.Sprintf("key-%02d", i); name != want {
			t.Fatalf("ListKeys pages: key %d is %q, want %q (all: %q)", i, name, want, got)
		}
	}

	keys, err := s.ListKeys(ctx, "key-12", 3)
	if err != nil {
		t.Fatalf("ListKeys(key-12, 3): %v", err)
	}
	if len(keys) != 3 || keys[0].Name != "key-13" || keys[2].Name != "key-15" {
		t.Errorf("ListKeys(key-12, 3) = %v, want key-13 to key-15", keys)
	}
	if keys, err := s.ListKeys(ctx, "", 0); err != nil || len(keys) != 0 {
		t.Errorf("ListKeys(limit 0) = %d keys, %v; want none", len(keys), err)
	}
	if keys, err := s.ListKeys(ctx, "key-24", 10); err != nil || len(keys) != 0 {
		t.Errorf("ListKeys after the last = %d keys, %v; want none", len(keys), err)
	}
}

func testListKeysOrder(t *testing.T, s keystore.Store) {
	// Bytewise order, whatever the database's collation.
	want := []string{"-x", "0", "A", "B", "Z9", "_", "a", "a-b", "aB", "a_b", "b"}
	for _, i := range mrand.Perm(len(want)) {
		mustCreate(t, s, want[i])
	}
	keys, err := s.ListKeys(testContext(t), "", 100)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.Name)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ListKeys order %q, want %q", got, want)
	}
}

func testContextCancelled(t *testing.T, s keystore.Store) {
	k, _ := mustCreate(t, s, "cancelled")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.GetKey(ctx, "cancelled")
	wantErr(t, "GetKey with a cancelled context", err, context.Canceled)
	_, err = s.AddVersion(ctx, k.ID, newHSMID(t))
	wantErr(t, "AddVersion with a cancelled context", err, context.Canceled)
	_, err = s.ListPublicKeys(ctx, "")
	wantErr(t, "ListPublicKeys with a cancelled context", err, context.Canceled)
	_, err = s.PromoteDue(ctx, time.Now())
	wantErr(t, "PromoteDue with a cancelled context", err, context.Canceled)
	err = s.Watch(ctx, func([16]byte) {})
	wantErr(t, "Watch with a cancelled context", err, context.Canceled)
	ran, err := s.RunExclusive(ctx, "cancelled", func(context.Context) error {
		t.Error("RunExclusive with a cancelled context ran fn")
		return nil
	})
	if ran {
		t.Error("RunExclusive with a cancelled context reported that fn ran")
	}
	wantErr(t, "RunExclusive with a cancelled context", err, context.Canceled)
}
