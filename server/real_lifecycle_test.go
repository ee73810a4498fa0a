package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/kms"
)

// fakeClock is a clock the tests move; nothing sleeps for a schedule.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func versionState(t *testing.T, r real, name string, version uint32) sigilv1.VersionState {
	t.Helper()
	res, err := r.client.ListKeyVersions(context.Background(), &sigilv1.ListKeyVersionsRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range res.GetKeyVersions() {
		if v.GetVersion() == version {
			return v.GetState()
		}
	}
	t.Fatalf("version %d not listed", version)
	return 0
}

func TestRealVersionStates(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	r := startReal(t, kms.WithClock(clock.Now), kms.WithPendingGrace(0))
	if _, err := r.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM, DestroyDelay: durationpb.New(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	enc := func() []byte {
		t.Helper()
		res, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("p")})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetCiphertext()
	}
	decrypt := func(ct []byte) error {
		_, err := r.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: ct})
		return err
	}
	ct1 := enc()
	if _, err := r.client.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	ct2 := enc()
	v1ID := r.token.Objects(t)[0].ID

	enable := func(v uint32) error {
		_, err := r.client.EnableKeyVersion(ctx, &sigilv1.EnableKeyVersionRequest{Name: "k", Version: v})
		return err
	}
	disable := func(v uint32) error {
		_, err := r.client.DisableKeyVersion(ctx, &sigilv1.DisableKeyVersionRequest{Name: "k", Version: v})
		return err
	}
	destroy := func(v uint32) error {
		_, err := r.client.ScheduleKeyVersionDestruction(ctx, &sigilv1.ScheduleKeyVersionDestructionRequest{Name: "k", Version: v})
		return err
	}
	restore := func(v uint32) error {
		_, err := r.client.RestoreKeyVersion(ctx, &sigilv1.RestoreKeyVersionRequest{Name: "k", Version: v})
		return err
	}
	steps := []struct {
		name string
		err  error
		code connect.Code         // 0: success
		want sigilv1.VersionState // v1's state after the step
	}{
		{"disable the primary", disable(2), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_ENABLED},
		{"destroy the primary", destroy(2), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_ENABLED},
		{"enable an enabled version", enable(1), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_ENABLED},
		{"restore an enabled version", restore(1), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_ENABLED},
		{"disable v1", disable(1), 0, sigilv1.VersionState_VERSION_STATE_DISABLED},
		{"decrypt under disabled v1", decrypt(ct1), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_DISABLED},
		{"disable v1 again", disable(1), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_DISABLED},
		{"enable v1", enable(1), 0, sigilv1.VersionState_VERSION_STATE_ENABLED},
		{"decrypt under enabled v1", decrypt(ct1), 0, sigilv1.VersionState_VERSION_STATE_ENABLED},
		{"schedule v1", destroy(1), 0, sigilv1.VersionState_VERSION_STATE_DESTROY_SCHEDULED},
		{"decrypt under scheduled v1", decrypt(ct1), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_DESTROY_SCHEDULED},
		{"enable a scheduled version", enable(1), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_DESTROY_SCHEDULED},
		{"disable a scheduled version", disable(1), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_DESTROY_SCHEDULED},
		{"schedule again", destroy(1), connect.CodeFailedPrecondition, sigilv1.VersionState_VERSION_STATE_DESTROY_SCHEDULED},
	}
	// The ops above ran in order when the slice was built; check each.
	for _, s := range steps {
		if s.code == 0 && s.err != nil {
			t.Fatalf("%s: %v", s.name, s.err)
		}
		if s.code != 0 && connect.CodeOf(s.err) != s.code {
			t.Fatalf("%s: %v, want %v", s.name, s.err, s.code)
		}
	}
	if st := versionState(t, r, "k", 1); st != steps[len(steps)-1].want {
		t.Fatalf("v1 is %v after the steps, want %v", st, steps[len(steps)-1].want)
	}
	// Within the delay: the scheduler leaves it, and Restore brings it back.
	clock.Add(30 * time.Second)
	if err := r.svc.RunScheduled(ctx); err != nil {
		t.Fatal(err)
	}
	if st := versionState(t, r, "k", 1); st != sigilv1.VersionState_VERSION_STATE_DESTROY_SCHEDULED {
		t.Fatalf("before the delay: %v", st)
	}
	if err := restore(1); err != nil {
		t.Fatal(err)
	}
	if st := versionState(t, r, "k", 1); st != sigilv1.VersionState_VERSION_STATE_DISABLED {
		t.Fatalf("after restore: %v", st)
	}
	if err := enable(1); err != nil {
		t.Fatal(err)
	}
	if err := decrypt(ct1); err != nil {
		t.Fatalf("decrypt after restore and enable: %v", err)
	}
	// Past the delay: destroyed, the HSM object is gone, the ciphertexts
	// fail as any bad ciphertext does, and the number is never reused.
	if err := destroy(1); err != nil {
		t.Fatal(err)
	}
	clock.Add(59 * time.Second)
	if err := r.svc.RunScheduled(ctx); err != nil {
		t.Fatal(err)
	}
	if st := versionState(t, r, "k", 1); st != sigilv1.VersionState_VERSION_STATE_DESTROY_SCHEDULED {
		t.Fatalf("1s before the delay: %v", st)
	}
	clock.Add(time.Second)
	if err := r.svc.RunScheduled(ctx); err != nil {
		t.Fatal(err)
	}
	if st := versionState(t, r, "k", 1); st != sigilv1.VersionState_VERSION_STATE_DESTROYED {
		t.Fatalf("after the delay: %v", st)
	}
	cerr := wantCode(t, decrypt(ct1), connect.CodeInvalidArgument)
	if cerr.Message() != "decryption failed" {
		t.Fatalf("message %q", cerr.Message())
	}
	for _, o := range r.token.Objects(t) {
		if bytes.Equal(o.ID, v1ID) {
			t.Fatal("the destroyed version's HSM object is still in the token")
		}
	}
	if n := len(r.token.Objects(t)); n != 1 {
		t.Fatalf("token holds %d objects, want 1", n)
	}
	for name, err := range map[string]error{"restore": restore(1), "enable": enable(1), "disable": disable(1), "destroy": destroy(1)} {
		if connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("%s a destroyed version: %v", name, err)
		}
	}
	for name, err := range map[string]error{"restore": restore(99), "enable": enable(99), "disable": disable(99), "destroy": destroy(99)} {
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s version 99: %v", name, err)
		}
	}
	if err := decrypt(ct2); err != nil {
		t.Fatalf("v2 ciphertext: %v", err)
	}
	res, err := r.client.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "k"})
	if err != nil || res.GetKeyVersion().GetVersion() != 3 {
		t.Fatalf("rotation after destruction = %v, %v; want version 3", res, err)
	}
}

func TestRealScheduledRotation(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	r := startReal(t, kms.WithClock(clock.Now))
	if _, err := r.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM, RotationPeriod: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	primary := func() (uint32, time.Time) {
		k, err := r.client.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		return k.GetKey().GetPrimaryVersion(), k.GetKey().GetNextRotationTime().AsTime()
	}
	if err := r.svc.RunScheduled(ctx); err != nil {
		t.Fatal(err)
	}
	if p, next := primary(); p != 1 || !next.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("before the period: primary %d, next %v", p, next)
	}
	// Down for five periods: one rotation, not five.
	clock.Add(5 * time.Hour)
	for i := 0; i < 3; i++ {
		if err := r.svc.RunScheduled(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if p, next := primary(); p != 2 || !next.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("after catching up: primary %d, next %v (now %v)", p, next, clock.Now())
	}
	vs, _ := r.client.ListKeyVersions(ctx, &sigilv1.ListKeyVersionsRequest{Name: "k"})
	if len(vs.GetKeyVersions()) != 2 {
		t.Fatalf("%d versions after catching up, want 2", len(vs.GetKeyVersions()))
	}
	// Stop the schedule.
	k, err := r.client.UpdateKey(ctx, &sigilv1.UpdateKeyRequest{Name: "k", RotationPeriod: durationpb.New(0)})
	if err != nil || k.GetKey().GetNextRotationTime() != nil || k.GetKey().GetRotationPeriod() != nil {
		t.Fatalf("UpdateKey(period 0) = %v, %v", k, err)
	}
	clock.Add(10 * time.Hour)
	if err := r.svc.RunScheduled(ctx); err != nil {
		t.Fatal(err)
	}
	if p, _ := primary(); p != 2 {
		t.Fatalf("rotated after the schedule stopped: %d", p)
	}
	for _, bad := range []*sigilv1.UpdateKeyRequest{
		{Name: "k", RotationPeriod: durationpb.New(time.Second)},
		{Name: "k", DestroyDelay: durationpb.New(59 * time.Second)},
		{Name: "k", PublishLead: durationpb.New(-time.Second)},
	} {
		_, err := r.client.UpdateKey(ctx, bad)
		wantCode(t, err, connect.CodeInvalidArgument)
	}
}

func jwtKid(t *testing.T, r real, name string) string {
	t.Helper()
	st, _ := structpb.NewStruct(map[string]any{"sub": "x"})
	res, err := r.client.SignJWT(context.Background(), &sigilv1.SignJWTRequest{Name: name, Claims: st})
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(mustB64(t, res.GetToken()), &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

func TestRealStagedRotation(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	r := startReal(t, kms.WithClock(clock.Now))
	if _, err := r.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "login", Algorithm: sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256}); err != nil {
		t.Fatal(err)
	}
	kid1 := jwtKid(t, r, "login")
	if _, err := r.client.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "login"}); err != nil {
		t.Fatal(err)
	}
	set, err := r.svc.JWKS(ctx, "login")
	if err != nil || bytes.Count(set.JSON, []byte(`"kid"`)) != 2 {
		t.Fatalf("JWKS right after the rotation: %s, %v", set.JSON, err)
	}
	if kid := jwtKid(t, r, "login"); kid != kid1 {
		t.Fatal("a token signed just after a staged rotation carries the new kid")
	}
	k, _ := r.client.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "login"})
	if k.GetKey().GetPrimaryVersion() != 1 || k.GetKey().GetStagedPrimaryVersion() != 2 {
		t.Fatalf("key after staging: %v", k.GetKey())
	}
	clock.Add(kms.DefaultPublishLead - time.Second)
	if kid := jwtKid(t, r, "login"); kid != kid1 {
		t.Fatal("new kid before the publish lead passed")
	}
	clock.Add(time.Second)
	kid2 := jwtKid(t, r, "login")
	if kid2 == kid1 {
		t.Fatal("old kid after the publish lead passed")
	}
	if err := r.svc.RunScheduled(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ = r.client.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "login"})
	if k.GetKey().GetPrimaryVersion() != 2 || k.GetKey().GetStagedPrimaryVersion() != 0 {
		t.Fatalf("key after promotion: %v", k.GetKey())
	}
	// Emergency rotation skips the lead.
	if _, err := r.client.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "login", Immediate: true}); err != nil {
		t.Fatal(err)
	}
	if kid := jwtKid(t, r, "login"); kid == kid2 || kid == kid1 {
		t.Fatal("immediate rotation did not switch the kid")
	}
	// A disabled version leaves the JWKS; enabling brings it back.
	if _, err := r.client.DisableKeyVersion(ctx, &sigilv1.DisableKeyVersionRequest{Name: "login", Version: 1}); err != nil {
		t.Fatal(err)
	}
	set, _ = r.svc.JWKS(ctx, "login")
	if bytes.Contains(set.JSON, []byte(kid1)) || bytes.Count(set.JSON, []byte(`"kid"`)) != 2 {
		t.Fatalf("JWKS with v1 disabled: %s", set.JSON)
	}
	_, err = r.client.Sign(ctx, &sigilv1.SignRequest{Name: "login", Version: 1, Input: &sigilv1.SignRequest_Message{Message: []byte("x")}})
	wantCode(t, err, connect.CodeFailedPrecondition)
}

func TestRealDataKeysAndReEncrypt(t *testing.T) {
	ctx := context.Background()
	r := startReal(t)
	createAES(t, r.client, "a")
	createAES(t, r.client, "b")
	seen := map[string]bool{}
	for i := 0; i < 500; i++ {
		dk, err := r.client.GenerateDataKey(ctx, &sigilv1.GenerateDataKeyRequest{Name: "a", AssociatedData: []byte("file-1")})
		if err != nil {
			t.Fatal(err)
		}
		if len(dk.GetPlaintext()) != 32 || seen[string(dk.GetPlaintext())] {
			t.Fatalf("data key %d: %d bytes, repeated %v", i, len(dk.GetPlaintext()), seen[string(dk.GetPlaintext())])
		}
		seen[string(dk.GetPlaintext())] = true
		if i == 0 {
			dec, err := r.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "a", Ciphertext: dk.GetCiphertext(), AssociatedData: []byte("file-1")})
			if err != nil || !bytes.Equal(dec.GetPlaintext(), dk.GetPlaintext()) {
				t.Fatalf("wrapped data key does not decrypt to the data key: %v", err)
			}
			re, err := r.client.ReEncrypt(ctx, &sigilv1.ReEncryptRequest{Name: "a", Ciphertext: dk.GetCiphertext(), AssociatedData: []byte("file-1"), DestinationName: "b"})
			if err != nil || re.GetSourceKeyVersion() != 1 || re.GetKeyVersion() != 1 {
				t.Fatalf("ReEncrypt = %v, %v", re, err)
			}
			dec, err = r.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "b", Ciphertext: re.GetCiphertext(), AssociatedData: []byte("file-1")})
			if err != nil || !bytes.Equal(dec.GetPlaintext(), dk.GetPlaintext()) {
				t.Fatalf("re-encrypted data key under b: %v", err)
			}
			_, err = r.client.ReEncrypt(ctx, &sigilv1.ReEncryptRequest{Name: "a", Ciphertext: dk.GetCiphertext(), AssociatedData: []byte("file-2"), DestinationName: "b"})
			wantCode(t, err, connect.CodeInvalidArgument)
			_, err = r.client.ReEncrypt(ctx, &sigilv1.ReEncryptRequest{Name: "b", Ciphertext: dk.GetCiphertext(), AssociatedData: []byte("file-1")})
			wantCode(t, err, connect.CodeInvalidArgument)
		}
	}
	dk, err := r.client.GenerateDataKey(ctx, &sigilv1.GenerateDataKeyRequest{Name: "a", WithoutPlaintext: true})
	if err != nil || len(dk.GetPlaintext()) != 0 || len(dk.GetCiphertext()) == 0 {
		t.Fatalf("without plaintext: %v, %v", dk, err)
	}
	if n := r.hsm.Calls("Random"); n != 501 {
		t.Fatalf("HSM Random calls = %d, want 501 (data keys come from the HSM)", n)
	}
}

func TestRealEncryptionBudget(t *testing.T) {
	ctx := context.Background()
	r := startReal(t, kms.WithEncryptionLimits(10, 20, 4))
	createAES(t, r.client, "k")
	for i := 0; i < 12; i++ {
		if _, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.svc.RunScheduled(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ := r.client.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "k"})
	if k.GetKey().GetPrimaryVersion() != 2 {
		t.Fatalf("primary = %d after crossing the soft limit, want 2", k.GetKey().GetPrimaryVersion())
	}
	// Without the scheduler, the hard limit stops the version.
	createAES(t, r.client, "h")
	ok := 0
	for i := 0; i < 30; i++ {
		_, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "h"})
		if err != nil {
			wantCode(t, err, connect.CodeFailedPrecondition)
			break
		}
		ok++
	}
	if ok < 16 || ok > 20 {
		t.Fatalf("%d encryptions before the hard limit of 20", ok)
	}
}

func mustB64(t *testing.T, token string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}
