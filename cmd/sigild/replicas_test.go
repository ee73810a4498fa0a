package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// TestTwoReplicas runs two sigild processes on one database and one token
// directory.
func TestTwoReplicas(t *testing.T) {
	ctx := context.Background()
	tok := softhsm.NewToken(t)
	db := postgrestest.NewDatabase(t)
	a := startSigild(t, tok, db).client()
	b := startSigild(t, tok, db).client()

	// A key created on A is usable on B at once.
	if _, err := a.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
		t.Fatal(err)
	}
	encB, err := b.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("from b")})
	if err != nil {
		t.Fatalf("B encrypts with A's new key: %v", err)
	}
	if dec, err := a.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: encB.GetCiphertext()}); err != nil || string(dec.GetPlaintext()) != "from b" {
		t.Fatalf("A decrypts B's ciphertext: %v", err)
	}

	// B's cache now holds the key: later encryptions use the batch of
	// counts B reserved, so nothing but a notification can tell B of a
	// change.
	for i := 0; i < 3; i++ {
		if _, err := b.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("warm")}); err != nil {
			t.Fatal(err)
		}
	}
	// A rotation on A reaches B's new encryptions within one second.
	if _, err := a.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		res, err := b.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetKeyVersion() == 2 {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("B still encrypts with version %d a second after A rotated", res.GetKeyVersion())
		}
	}
	t.Logf("B used the new version %v after A's rotation", time.Since(start))

	// A version disabled on A is refused on B, which has it cached.
	if _, err := b.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: encB.GetCiphertext()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DisableKeyVersion(ctx, &sigilv1.DisableKeyVersionRequest{Name: "k", Version: 1}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for {
		_, err := b.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: encB.GetCiphertext()})
		if connect.CodeOf(err) == connect.CodeFailedPrecondition {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("B still decrypts with version 1 a second after A disabled it: %v", err)
		}
	}
}

// TestSchedulersRotateOnce runs two replicas' schedulers and then makes a
// key's rotation due; between them they make exactly one new version.
func TestSchedulersRotateOnce(t *testing.T) {
	ctx := context.Background()
	tok := softhsm.NewToken(t)
	db := postgrestest.NewDatabase(t)
	a := startSigild(t, tok, db, "--scheduler-interval", "20ms", "--log-level", "debug")
	b := startSigild(t, tok, db, "--scheduler-interval", "20ms", "--log-level", "debug")
	c := a.client()
	if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM, RotationPeriod: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	const pass = `"msg":"scheduler pass"`
	waitPasses := func(na, nb int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for a.count(pass) < na || b.count(pass) < nb {
			if time.Now().After(deadline) {
				t.Fatalf("schedulers did not run: a %d, b %d passes", a.count(pass), b.count(pass))
			}
			a.waitOutput(deadline)
		}
	}
	waitPasses(1, 1)
	if _, err := c.UpdateKey(ctx, &sigilv1.UpdateKeyRequest{Name: "k", NextRotationTime: timestamppb.New(time.Now().Add(-time.Second))}); err != nil {
		t.Fatal(err)
	}
	waitPasses(a.count(pass)+5, b.count(pass)+5)
	vs, err := c.ListKeyVersions(ctx, &sigilv1.ListKeyVersionsRequest{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(vs.GetKeyVersions()); n != 2 {
		t.Fatalf("%d versions after two schedulers ran, want exactly 2", n)
	}
	if n := a.count(`"msg":"scheduled rotation"`) + b.count(`"msg":"scheduled rotation"`); n != 1 {
		t.Fatalf("%d scheduled rotations logged, want 1", n)
	}
	k, _ := c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "k"})
	if next := k.GetKey().GetNextRotationTime().AsTime(); time.Until(next) < 50*time.Minute {
		t.Fatalf("next rotation %v was not moved a period ahead", next)
	}
}

// TestCrashDuringRotation kills sigild with SIGKILL at each step of a
// rotation, restarts it, and checks that no version is lost or orphaned
// and that earlier ciphertexts still decrypt.
func TestCrashDuringRotation(t *testing.T) {
	cases := []struct {
		step string
		alg  sigilv1.Algorithm
	}{
		{"version:pending", sigilv1.Algorithm_ALGORITHM_AES_256_GCM},
		{"version:hsm", sigilv1.Algorithm_ALGORITHM_AES_256_GCM},
		{"version:commit", sigilv1.Algorithm_ALGORITHM_AES_256_GCM},
		{"version:hsm", sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256},
		{"version:commit", sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256},
	}
	for _, tc := range cases {
		step := tc.step
		signing := tc.alg != sigilv1.Algorithm_ALGORITHM_AES_256_GCM
		t.Run(strings.TrimPrefix(step, "version:")+"-"+strings.ToLower(tc.alg.String()), func(t *testing.T) {
			ctx := context.Background()
			tok := softhsm.NewToken(t)
			db := postgrestest.NewDatabase(t)
			p := startSigild(t, tok, db)
			c := p.client()
			if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: tc.alg}); err != nil {
				t.Fatal(err)
			}
			check := func(c sigilv1connect.KeyManagementServiceClient) {}
			if signing {
				sig, err := c.Sign(ctx, &sigilv1.SignRequest{Name: "k", Input: &sigilv1.SignRequest_Message{Message: []byte("before")}})
				if err != nil {
					t.Fatal(err)
				}
				check = func(c sigilv1connect.KeyManagementServiceClient) {
					v, err := c.Verify(ctx, &sigilv1.VerifyRequest{Name: "k", Version: 1, Input: &sigilv1.VerifyRequest_Message{Message: []byte("before")}, Signature: sig.GetSignature()})
					if err != nil || !v.GetValid() {
						t.Fatalf("old signature after the crash: %v, %v", v, err)
					}
				}
			} else {
				enc, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("before")})
				if err != nil {
					t.Fatal(err)
				}
				check = func(c sigilv1connect.KeyManagementServiceClient) {
					dec, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: enc.GetCiphertext()})
					if err != nil || string(dec.GetPlaintext()) != "before" {
						t.Fatalf("old ciphertext after the crash: %v", err)
					}
				}
			}
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			_ = p.wait()

			crashing := startSigildEnv(t, tok, db, []string{failpointEnv + "=" + step})
			if _, err := crashing.client().RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "k"}); err == nil {
				t.Fatal("RotateKey succeeded through a failpoint")
			}
			err := crashing.wait()
			if ws, ok := exitSignal(err); !ok || ws != syscall.SIGKILL {
				t.Fatalf("sigild did not die by SIGKILL at %s: %v", step, err)
			}

			restarted := startSigild(t, tok, db, "--pending-grace", "0s")
			c = restarted.client()
			vs, err := c.ListKeyVersions(ctx, &sigilv1.ListKeyVersionsRequest{Name: "k"})
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if step == "version:commit" {
				want = 2
			}
			if n := len(vs.GetKeyVersions()); n != want {
				t.Fatalf("after a crash at %s: %d versions, want %d", step, n, want)
			}
			for _, v := range vs.GetKeyVersions() {
				if v.GetState() != sigilv1.VersionState_VERSION_STATE_ENABLED {
					t.Fatalf("version %d is %v", v.GetVersion(), v.GetState())
				}
			}
			if n := len(tok.Objects(t)); n != want {
				t.Fatalf("after a crash at %s: %d HSM objects for %d versions", step, n, want)
			}
			check(c)
			if signing && step == "version:commit" {
				// The committed signing version is staged, not lost.
				k, err := c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "k"})
				if err != nil || k.GetKey().GetStagedPrimaryVersion() != 2 {
					t.Fatalf("after a crash at commit: %v, %v; want version 2 staged", k.GetKey(), err)
				}
			}
			rot, err := c.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "k", Immediate: true})
			if err != nil || rot.GetKeyVersion().GetVersion() != 3 {
				t.Fatalf("rotation after the crash = %v, %v; want version 3 (2 is never reused)", rot, err)
			}
		})
	}
}
