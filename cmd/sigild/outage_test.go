package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	auditpg "github.com/sigil-kms/sigil/audit/postgres"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// TestDatabaseOutage cuts sigild's connections to Postgres and refuses new
// ones, then restores them. While the database is gone every RPC fails
// with Unavailable within the caller's deadline (a cached key may not
// encrypt when its audit record cannot be written) and /readyz says not
// ready; once it is back sigild serves again without a restart, and
// nothing written before the outage is lost.
func TestDatabaseOutage(t *testing.T) {
	dbURL := postgrestest.NewDatabase(t)
	proxy, proxied := postgrestest.NewProxy(t, dbURL)
	p := startSigild(t, softhsm.NewToken(t), proxied)
	c := p.client()
	ctx := context.Background()
	if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
		t.Fatal(err)
	}
	before, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("before the outage")})
	if err != nil {
		t.Fatal(err)
	}

	proxy.Cut()
	cut := time.Now()
	calls := map[string]func(context.Context) error{
		"Encrypt (cached key)": func(ctx context.Context) error {
			_, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("during")})
			return err
		},
		"Decrypt (cached key)": func(ctx context.Context) error {
			_, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: before.GetCiphertext()})
			return err
		},
		"CreateKey": func(ctx context.Context) error {
			_, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k2", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM})
			return err
		},
		"ListKeys": func(ctx context.Context) error {
			_, err := c.ListKeys(ctx, &sigilv1.ListKeysRequest{})
			return err
		},
	}
	if err := duringOutage(t, calls, nil); err != nil {
		t.Error(err)
	}
	if code := p.readyz(t); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the outage = %d, want 503", code)
	}
	t.Logf("outage lasted %v", time.Since(cut).Round(time.Millisecond))

	proxy.Restore()
	after := p.encryptWhenBack(t, "k", "the database")
	if code := p.readyz(t); code != http.StatusOK {
		t.Errorf("/readyz after the outage = %d, want 200", code)
	}
	for _, ct := range [][]byte{before.GetCiphertext(), after.GetCiphertext()} {
		if _, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: ct}); err != nil {
			t.Errorf("Decrypt after the outage: %v", err)
		}
	}
	if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k2", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
		t.Errorf("CreateKey after the outage: %v", err)
	}
	checked, bad, err := auditpg.VerifyDatabase(ctx, dbURL)
	if err != nil || bad != 0 || checked == 0 {
		t.Errorf("audit chain after the outage: %d checked, first bad %d, %v", checked, bad, err)
	}
}

// readyz returns the HTTP status of sigild's /readyz.
func (p *process) readyz(t *testing.T) int {
	t.Helper()
	res, err := http.Get(p.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// duringOutage runs each call with a 15 s deadline and returns an error
// naming the first that did not fail with Unavailable, unless mayWork
// allows it to succeed. It logs what each call saw and when.
func duringOutage(t *testing.T, calls map[string]func(context.Context) error, mayWork func(name string) bool) error {
	t.Helper()
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		start := time.Now()
		err := call(ctx)
		cancel()
		outcome := "ok"
		if err != nil {
			outcome = connect.CodeOf(err).String()
		}
		t.Logf("%s during the outage: %s after %v", name, outcome, time.Since(start).Round(time.Millisecond))
		if err == nil && mayWork != nil && mayWork(name) {
			continue
		}
		if connect.CodeOf(err) != connect.CodeUnavailable {
			return fmt.Errorf("%s during the outage: %v, want Unavailable", name, err)
		}
	}
	return nil
}

// encryptWhenBack encrypts under key until the call stops failing with
// Unavailable, for up to a minute, and logs how long that took.
func (p *process) encryptWhenBack(t *testing.T, key, what string) *sigilv1.EncryptResponse {
	t.Helper()
	c := p.client()
	back := time.Now()
	for deadline := back.Add(time.Minute); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: key, Plaintext: []byte("after the outage")})
		cancel()
		if err == nil {
			t.Logf("service resumed %v after %s came back", time.Since(back).Round(time.Millisecond), what)
			return res
		}
		if connect.CodeOf(err) != connect.CodeUnavailable || time.Now().After(deadline) {
			t.Fatalf("Encrypt after %s came back: %v", what, err)
		}
		p.waitOutput(time.Now().Add(50 * time.Millisecond))
	}
}
