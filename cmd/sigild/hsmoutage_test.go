package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// TestHSMOutage takes the SoftHSM token's files away from a running
// sigild and gives them back. While the token is gone, RPCs that need the
// HSM either still work (SoftHSM keeps loaded objects in memory) or fail
// with Unavailable within the caller's deadline (never NotFound, never a
// hang), and /readyz says not ready; once it is back sigild serves the
// same keys again without a restart.
func TestHSMOutage(t *testing.T) {
	tok := softhsm.NewToken(t)
	p := startSigild(t, tok, postgrestest.NewDatabase(t))
	c := p.client()
	ctx := context.Background()
	for name, alg := range map[string]sigilv1.Algorithm{"aes": sigilv1.Algorithm_ALGORITHM_AES_256_GCM, "ec": sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256} {
		if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: name, Algorithm: alg}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "aes", Plaintext: []byte("before the outage")})
	if err != nil {
		t.Fatal(err)
	}

	dir := tok.Dir(t)
	// Out of the directory of tokens: SoftHSM finds a token in any
	// subdirectory of it.
	away := filepath.Join(filepath.Dir(filepath.Dir(dir)), "away-"+filepath.Base(dir))
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	back := func() {
		if err := os.Rename(away, dir); err != nil {
			t.Fatal(err)
		}
	}
	calls := map[string]func(context.Context) error{
		"Encrypt": func(ctx context.Context) error {
			_, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "aes", Plaintext: []byte("during")})
			return err
		},
		"Decrypt": func(ctx context.Context) error {
			_, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "aes", Ciphertext: before.GetCiphertext()})
			return err
		},
		"Sign": func(ctx context.Context) error {
			_, err := c.Sign(ctx, &sigilv1.SignRequest{Name: "ec", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
			return err
		},
		"CreateKey": func(ctx context.Context) error {
			_, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "during", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM})
			return err
		},
	}
	// A key object SoftHSM still holds in memory may keep working;
	// anything else must be Unavailable, and CreateKey must fail.
	if err := duringOutage(t, calls, func(name string) bool { return name != "CreateKey" }); err != nil {
		back()
		t.Fatal(err)
	}
	if code := p.readyz(t); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the token gone = %d, want 503", code)
	}

	back()
	after := p.encryptWhenBack(t, "aes", "the token")
	if code := p.readyz(t); code != http.StatusOK {
		t.Errorf("/readyz after the outage = %d, want 200", code)
	}
	for _, ct := range [][]byte{before.GetCiphertext(), after.GetCiphertext()} {
		if _, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "aes", Ciphertext: ct}); err != nil {
			t.Errorf("Decrypt after the outage: %v", err)
		}
	}
	if _, err := c.Sign(ctx, &sigilv1.SignRequest{Name: "ec", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}}); err != nil {
		t.Errorf("Sign after the outage: %v", err)
	}
	if n := len(tok.Objects(t)); n != 2 {
		t.Errorf("%d objects on the token after the outage, want 2, the AES key and the EC private key (no key made while it was gone)", n)
	}
}
