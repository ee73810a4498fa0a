package kms

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sigil-kms/sigil/keystore"
)

// purposes is the documented table of algorithms and their purposes, as
// an oracle independent of the algorithms map.
var purposes = map[keystore.Algorithm]keystore.Purpose{
	"AES_256_GCM":           keystore.PurposeEncryptDecrypt,
	"EC_P256_SHA256":        keystore.PurposeSignVerify,
	"EC_P384_SHA384":        keystore.PurposeSignVerify,
	"RSA_PSS_2048_SHA256":   keystore.PurposeSignVerify,
	"RSA_PSS_3072_SHA256":   keystore.PurposeSignVerify,
	"RSA_PSS_4096_SHA256":   keystore.PurposeSignVerify,
	"RSA_PKCS1_2048_SHA256": keystore.PurposeSignVerify,
	"RSA_PKCS1_3072_SHA256": keystore.PurposeSignVerify,
	"RSA_PKCS1_4096_SHA256": keystore.PurposeSignVerify,
	"ED25519":               keystore.PurposeSignVerify,
}

// validSettings is the documented rule for a key's rotation period,
// destroy delay and publish lead (after defaults), as an oracle.
func validSettings(p keystore.Purpose, rotation, destroy, lead time.Duration) bool {
	const century = 100 * 365 * 24 * time.Hour
	switch {
	case lead != 0 && (lead < 5*time.Minute || lead > century):
		return false
	case rotation != 0 && (rotation < time.Minute || rotation > century):
		return false
	case destroy < time.Minute || destroy > century:
		return false
	case p == keystore.PurposeSignVerify && rotation != 0 && rotation <= lead:
		return false
	}
	return true
}

// validLabels is the documented rule for labels: at most 64, keys like key
// names, values UTF-8 of at most 255 bytes.
func validLabels(labels map[string]string) bool {
	if len(labels) > 64 {
		return false
	}
	for k, v := range labels {
		if !namePattern.MatchString(k) || len(v) > 255 || !utf8.ValidString(v) {
			return false
		}
	}
	return true
}

// FuzzCreateKey sends arbitrary CreateKey requests. A request is accepted
// exactly when its name, algorithm, labels and settings follow the
// documented rules (and its name is free), and the stored key is the one
// asked for; any other request fails with ErrInvalidArgument before any
// HSM call, or with ErrAlreadyExists.
func FuzzCreateKey(f *testing.F) {
	minute, day := int64(time.Minute), int64(24*time.Hour)
	f.Add("k", "AES_256_GCM", "team", "data", uint8(0), int64(0), int64(0), int64(0))
	f.Add("taken", "AES_256_GCM", "", "", uint8(0), int64(0), int64(0), int64(0))
	f.Add("sess", "ED25519", "", "", uint8(64), 30*day, 7*day, 10*minute)
	f.Add("sess", "EC_P256_SHA256", "", "", uint8(65), 10*minute, 7*day, 10*minute)
	f.Add("rsa", "RSA_PSS_4096_SHA256", "a b", "c", uint8(0), int64(0), int64(0), 4*minute)
	f.Add(strings.Repeat("a", 64), "AES_256_GCM", "", "", uint8(0), int64(0), minute-1, int64(0))
	f.Add("k\u0435y", "aes_256_gcm", "k", strings.Repeat("é", 128), uint8(0), -minute, int64(0), int64(0))
	f.Add("../x", "", "k", "\xff", uint8(0), 101*365*day, 101*365*day, int64(-1))
	f.Fuzz(func(t *testing.T, name, alg, labelKey, labelValue string, extra uint8, rotation, destroy, lead int64) {
		ctx := context.Background()
		svc, b := newFuzzService(t)
		mustCreate(t, svc, "taken", keystore.AES256GCM)
		b.ResetCalls()
		labels := map[string]string{}
		if labelKey != "" || labelValue != "" {
			labels[labelKey] = labelValue
		}
		for i := range int(extra) {
			labels[fmt.Sprintf("l%d", i)] = "v"
		}
		req := CreateKeyRequest{Name: name, Algorithm: keystore.Algorithm(alg), Labels: labels,
			RotationPeriod: time.Duration(rotation), DestroyDelay: time.Duration(destroy), PublishLead: time.Duration(lead)}
		k, err := svc.CreateKey(ctx, req)

		want := req
		if want.DestroyDelay == 0 {
			want.DestroyDelay = 30 * 24 * time.Hour
		}
		if want.PublishLead == 0 {
			want.PublishLead = 10 * time.Minute
		}
		purpose, known := purposes[want.Algorithm]
		switch {
		case !namePattern.MatchString(name) || !known || !validLabels(labels) ||
			!validSettings(purpose, want.RotationPeriod, want.DestroyDelay, want.PublishLead):
			checkKind(t, "CreateKey", err, ErrInvalidArgument)
			if n := b.TotalCalls(); n != 0 {
				t.Fatalf("a refused CreateKey made %d HSM calls", n)
			}
			if name != "taken" && namePattern.MatchString(name) {
				_, err := svc.GetKey(ctx, name)
				checkKind(t, "GetKey after a refused CreateKey", err, ErrNotFound)
			}
			return
		case name == "taken":
			checkKind(t, "CreateKey of a taken name", err, ErrAlreadyExists)
			return
		case err != nil:
			t.Fatalf("CreateKey(%+v) = %v", req, err)
		}
		got, err := svc.GetKey(ctx, name)
		if err != nil || got.ID != k.ID {
			t.Fatalf("GetKey after CreateKey = %+v, %v", got, err)
		}
		if got.Name != name || got.Algorithm != want.Algorithm || got.Purpose != purpose || got.PrimaryVersion != 1 ||
			!maps.Equal(got.Labels, labels) || got.RotationPeriod != want.RotationPeriod ||
			got.DestroyDelay != want.DestroyDelay || got.PublishLead != want.PublishLead ||
			got.NextRotationTime.IsZero() != (want.RotationPeriod == 0) {
			t.Fatalf("stored key %+v for request %+v", got, req)
		}
	})
}

// versionModel is what FuzzKeyVersions expects of one key of its fixture.
type versionModel struct {
	purpose keystore.Purpose
	states  map[uint32]keystore.State
	primary uint32
	staged  uint32
}

// newVersionFixture returns a Service with two keys: "k" (AES) with
// version 1 disabled, 2 scheduled for destruction and 3 primary, and "s"
// (Ed25519) with version 1 primary and 2 staged; and their model.
func newVersionFixture(t *testing.T) (*Service, map[string]*versionModel) {
	t.Helper()
	ctx := context.Background()
	svc, _ := newFuzzService(t)
	mustCreate(t, svc, "k", keystore.AES256GCM)
	mustCreate(t, svc, "s", keystore.Ed25519)
	var errs []error
	for _, step := range []func() error{
		func() error { _, err := svc.RotateKey(ctx, "k", true); return err },
		func() error { _, err := svc.RotateKey(ctx, "k", true); return err },
		func() error { _, _, err := svc.DisableKeyVersion(ctx, "k", 1); return err },
		func() error { _, _, err := svc.ScheduleKeyVersionDestruction(ctx, "k", 2); return err },
		func() error { _, err := svc.RotateKey(ctx, "s", false); return err },
	} {
		errs = append(errs, step())
	}
	for _, err := range errs {
		if err != nil {
			t.Fatalf("fixture: %v", err)
		}
	}
	return svc, map[string]*versionModel{
		"k": {purpose: keystore.PurposeEncryptDecrypt, primary: 3, states: map[uint32]keystore.State{
			1: keystore.StateDisabled, 2: keystore.StateDestroyScheduled, 3: keystore.StateEnabled}},
		"s": {purpose: keystore.PurposeSignVerify, primary: 1, staged: 2, states: map[uint32]keystore.State{
			1: keystore.StateEnabled, 2: keystore.StateEnabled}},
	}
}

// FuzzKeyVersions sends arbitrary version-state changes, listings, updates,
// rotations, public-key and JWKS reads, with arbitrary names, version numbers,
// page sizes and page tokens, to a fixture whose state it models. Every
// failure is a caller-safe *Error of the kind the model predicts.
func FuzzKeyVersions(f *testing.F) {
	for op := range uint8(10) {
		f.Add(op, "k", uint32(1), int32(0), "", int64(0), int64(0), int64(0), int64(0))
		f.Add(op, "s", uint32(2), int32(1), "", int64(time.Hour), int64(0), int64(0), int64(0))
	}
	f.Add(uint8(4), "k", uint32(0), int32(1), versionToken(1), int64(0), int64(0), int64(0), int64(0))
	f.Add(uint8(4), "k", uint32(0), int32(-1), "AAAAAQ==", int64(0), int64(0), int64(0), int64(0))
	f.Add(uint8(5), "", uint32(0), int32(1), nameToken("k"), int64(0), int64(0), int64(0), int64(0))
	f.Add(uint8(5), "", uint32(0), int32(2000), nameToken("../k"), int64(0), int64(0), int64(0), int64(0))
	f.Add(uint8(6), "s", uint32(15), int32(0), "", int64(5*time.Minute), int64(time.Minute), int64(5*time.Minute), int64(1))
	f.Add(uint8(6), "k", uint32(9), int32(0), "", int64(time.Hour), int64(0), int64(0), int64(0))
	f.Add(uint8(0), "nope", uint32(1), int32(0), "", int64(0), int64(0), int64(0), int64(0))
	f.Add(uint8(1), "k", uint32(1<<32-1), int32(0), "", int64(0), int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, op uint8, name string, version uint32, size int32, token string, rotation, destroy, lead, next int64) {
		svc, model := newVersionFixture(t)
		m := model[name]
		// keyErr is the error the name alone calls for, nil for a key of
		// the fixture.
		var keyErr error
		switch {
		case !namePattern.MatchString(name):
			keyErr = ErrInvalidArgument
		case m == nil:
			keyErr = ErrNotFound
		}
		switch op %= 10; op {
		case 0, 1, 2, 3:
			fuzzTransition(t, svc, op, name, version, keyErr, m)
		case 4:
			fuzzListVersions(t, svc, name, size, token, keyErr, m)
		case 5:
			fuzzListKeys(t, svc, size, token)
		case 6:
			fuzzUpdate(t, svc, name, version, rotation, destroy, lead, next, keyErr, m)
		case 7:
			fuzzRotate(t, svc, name, version&1 == 1, keyErr, m)
		case 8:
			fuzzGetPublicKey(t, svc, name, version, keyErr, m)
		case 9:
			fuzzJWKS(t, svc, name, keyErr, m)
		}
	})
}

func fuzzTransition(t *testing.T, svc *Service, op uint8, name string, version uint32, keyErr error, m *versionModel) {
	ctx := context.Background()
	calls := []func(context.Context, string, uint32) (keystore.Key, keystore.Version, error){
		svc.EnableKeyVersion, svc.DisableKeyVersion, svc.ScheduleKeyVersionDestruction, svc.RestoreKeyVersion}
	from := [][]keystore.State{
		{keystore.StateDisabled},
		{keystore.StateEnabled},
		{keystore.StateEnabled, keystore.StateDisabled},
		{keystore.StateDestroyScheduled},
	}[op]
	to := []keystore.State{keystore.StateEnabled, keystore.StateDisabled, keystore.StateDestroyScheduled, keystore.StateDisabled}[op]
	_, v, err := calls[op](ctx, name, version)
	what := fmt.Sprintf("transition %d of %q v%d", op, name, version)
	if keyErr != nil {
		checkKind(t, what, err, keyErr)
		return
	}
	state, exists := m.states[version]
	switch {
	case !exists:
		checkKind(t, what, err, ErrNotFound)
	case op != 0 && op != 3 && (version == m.primary || version == m.staged):
		checkKind(t, what+" (primary)", err, ErrFailedPrecondition)
	case !containsState(from, state):
		checkKind(t, what+" from "+string(state), err, ErrFailedPrecondition)
	case err != nil || v.Version != version || v.State != to:
		t.Fatalf("%s = %+v, %v; want state %s", what, v, err, to)
	default:
		vs, _, err := svc.ListKeyVersions(ctx, name, 0, "")
		if err != nil || len(vs) != len(m.states) || vs[version-1].State != to {
			t.Fatalf("versions after %s: %+v, %v", what, vs, err)
		}
	}
}

func containsState(states []keystore.State, s keystore.State) bool {
	for _, x := range states {
		if x == s {
			return true
		}
	}
	return false
}

// pageLen is the documented page size for a requested one.
func pageLen(size int32) int {
	switch {
	case size == 0:
		return 100
	case size > 1000:
		return 1000
	}
	return int(size)
}

func fuzzListVersions(t *testing.T, svc *Service, name string, size int32, token string, keyErr error, m *versionModel) {
	vs, next, err := svc.ListKeyVersions(context.Background(), name, size, token)
	var want []error
	after, tokErr := parseVersionToken(token)
	if size < 0 || tokErr != nil {
		want = append(want, ErrInvalidArgument)
	}
	if keyErr != nil {
		want = append(want, keyErr)
	}
	if len(want) > 0 {
		checkKind(t, "ListKeyVersions", err, want...)
		return
	}
	if err != nil {
		t.Fatalf("ListKeyVersions(%q, %d, %q) = %v", name, size, token, err)
	}
	var rest []uint32
	for v := uint32(1); v <= uint32(len(m.states)); v++ {
		if v > after {
			rest = append(rest, v)
		}
	}
	n := min(pageLen(size), len(rest))
	if len(vs) != n {
		t.Fatalf("ListKeyVersions after %d, size %d: %d versions, want %d", after, size, len(vs), n)
	}
	for i, v := range vs {
		if v.Version != rest[i] || v.State != m.states[v.Version] {
			t.Fatalf("version %d = %+v, want v%d %s", i, v, rest[i], m.states[rest[i]])
		}
	}
	if (next != "") != (len(rest) > n) {
		t.Fatalf("next page token %q with %d of %d versions", next, n, len(rest))
	}
	if next != "" {
		if v, err := parseVersionToken(next); err != nil || v != vs[n-1].Version {
			t.Fatalf("next page token %q = %d, %v", next, v, err)
		}
	}
}

func fuzzListKeys(t *testing.T, svc *Service, size int32, token string) {
	keys, next, err := svc.ListKeys(context.Background(), size, token, nil)
	after, tokErr := parseNameToken(token)
	if size < 0 || tokErr != nil {
		checkKind(t, "ListKeys", err, ErrInvalidArgument)
		return
	}
	if err != nil {
		t.Fatalf("ListKeys(%d, %q) = %v", size, token, err)
	}
	var rest []string
	for _, n := range []string{"k", "s"} {
		if n > after {
			rest = append(rest, n)
		}
	}
	n := min(pageLen(size), len(rest))
	if len(keys) != n {
		t.Fatalf("ListKeys after %q, size %d: %d keys, want %d", after, size, len(keys), n)
	}
	for i, k := range keys {
		if k.Name != rest[i] {
			t.Fatalf("key %d = %q, want %q", i, k.Name, rest[i])
		}
	}
	if (next != "") != (len(rest) > n) {
		t.Fatalf("next page token %q with %d of %d keys", next, n, len(rest))
	}
	if next != "" {
		if name, err := parseNameToken(next); err != nil || name != keys[n-1].Name {
			t.Fatalf("next page token %q = %q, %v", next, name, err)
		}
	}
}

// fuzzUpdate updates the fields that the low bits of flags select:
// rotation period, destroy delay, publish lead and next rotation time (next
// seconds after the epoch, or the zero time for 0).
func fuzzUpdate(t *testing.T, svc *Service, name string, flags uint32, rotation, destroy, lead, next int64, keyErr error, m *versionModel) {
	ctx := context.Background()
	var u KeyUpdate
	r, d, l := time.Duration(rotation), time.Duration(destroy), time.Duration(lead)
	nt := time.Time{}
	if next != 0 {
		nt = time.Unix(next, 0)
	}
	if flags&1 != 0 {
		u.RotationPeriod = &r
	}
	if flags&2 != 0 {
		u.DestroyDelay = &d
	}
	if flags&4 != 0 {
		u.PublishLead = &l
	}
	if flags&8 != 0 {
		u.NextRotationTime = &nt
	}
	var before keystore.Key
	if keyErr == nil {
		var err error
		if before, err = svc.GetKey(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	k, err := svc.UpdateKey(ctx, name, u)
	if keyErr != nil {
		checkKind(t, "UpdateKey", err, keyErr)
		return
	}
	want := before
	for _, set := range []struct {
		dst *time.Duration
		src *time.Duration
	}{{&want.RotationPeriod, u.RotationPeriod}, {&want.DestroyDelay, u.DestroyDelay}, {&want.PublishLead, u.PublishLead}} {
		if set.src != nil {
			*set.dst = *set.src
		}
	}
	if !validSettings(m.purpose, want.RotationPeriod, want.DestroyDelay, want.PublishLead) ||
		(want.RotationPeriod != 0 && u.NextRotationTime != nil && nt.IsZero()) {
		checkKind(t, fmt.Sprintf("UpdateKey(%+v)", want), err, ErrInvalidArgument)
		return
	}
	if err != nil {
		t.Fatalf("UpdateKey(%q, flags %b: %v %v %v %v) = %v", name, flags, r, d, l, nt, err)
	}
	switch {
	case k.RotationPeriod != want.RotationPeriod || k.DestroyDelay != want.DestroyDelay || k.PublishLead != want.PublishLead:
		t.Fatalf("updated key %+v, want settings of %+v", k, want)
	case want.RotationPeriod == 0 && !k.NextRotationTime.IsZero():
		t.Fatalf("no rotation period, but next rotation at %v", k.NextRotationTime)
	case want.RotationPeriod != 0 && u.NextRotationTime != nil && !k.NextRotationTime.Equal(nt):
		t.Fatalf("next rotation %v, want %v", k.NextRotationTime, nt)
	case want.RotationPeriod != 0 && u.NextRotationTime == nil && u.RotationPeriod != nil && k.NextRotationTime.IsZero():
		t.Fatal("a new rotation period scheduled no rotation")
	}
}

func fuzzRotate(t *testing.T, svc *Service, name string, immediate bool, keyErr error, m *versionModel) {
	ctx := context.Background()
	v, err := svc.RotateKey(ctx, name, immediate)
	if keyErr != nil {
		checkKind(t, "RotateKey", err, keyErr)
		return
	}
	if err != nil || v.Version != uint32(len(m.states))+1 || v.State != keystore.StateEnabled {
		t.Fatalf("RotateKey(%q) = %+v, %v", name, v, err)
	}
	k, err := svc.GetKey(ctx, name)
	staged := m.purpose == keystore.PurposeSignVerify && !immediate
	if err != nil || (k.PrimaryVersion == v.Version) == staged || (k.StagedPrimary == v.Version) != staged {
		t.Fatalf("after RotateKey(%q, immediate %v): %+v, %v", name, immediate, k, err)
	}
}

func fuzzGetPublicKey(t *testing.T, svc *Service, name string, version uint32, keyErr error, m *versionModel) {
	pk, err := svc.GetPublicKey(context.Background(), name, version)
	if keyErr != nil {
		checkKind(t, "GetPublicKey", err, keyErr)
		return
	}
	want := version
	if want == 0 {
		want = m.primary
	}
	state, exists := m.states[want]
	switch {
	case m.purpose != keystore.PurposeSignVerify:
		checkKind(t, "GetPublicKey of an encryption key", err, ErrFailedPrecondition)
	case !exists:
		checkKind(t, "GetPublicKey", err, ErrNotFound)
	case state != keystore.StateEnabled:
		checkKind(t, "GetPublicKey", err, ErrFailedPrecondition)
	case err != nil || pk.Version != want || pk.KID == "" || !strings.Contains(pk.PEM, "PUBLIC KEY"):
		t.Fatalf("GetPublicKey(%q, %d) = %+v, %v", name, version, pk, err)
	}
}

func fuzzJWKS(t *testing.T, svc *Service, name string, keyErr error, m *versionModel) {
	doc, err := svc.JWKS(context.Background(), name)
	switch {
	case name != "" && keyErr != nil:
		checkKind(t, "JWKS", err, keyErr)
		return
	case name != "" && m.purpose != keystore.PurposeSignVerify:
		checkKind(t, "JWKS of an encryption key", err, ErrFailedPrecondition)
		return
	case err != nil:
		t.Fatalf("JWKS(%q) = %v", name, err)
	}
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	// The fixture's only enabled signing versions are both of "s".
	if err := json.Unmarshal(doc.JSON, &set); err != nil || len(set.Keys) != 2 || set.Keys[0].KID == set.Keys[1].KID || doc.ETag == "" {
		t.Fatalf("JWKS(%q) = %s, %s (%v)", name, doc.JSON, doc.ETag, err)
	}
}
