package server

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
)

// TestHSMFaults injects each kind of HSM fault under Encrypt and checks what
// the caller sees: Unavailable for a failing module, DeadlineExceeded (at
// the caller's deadline, not the HSM's pace) for a hung one, and normal
// service once the fault ends.
func TestHSMFaults(t *testing.T) {
	f := startFakes(t)
	createAES(t, f.client, "k")
	encrypt := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := f.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("x")})
		return err
	}
	for _, fault := range []error{hsmtest.ErrDevice, hsmtest.ErrSessionInvalid, hsmtest.ErrNotLoggedIn} {
		f.hsm.Fail(fault, hsmtest.MethodSeal)
		if err := encrypt(10 * time.Second); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("Encrypt under %v: %v, want Unavailable", fault, err)
		}
		f.hsm.Recover()
		if err := encrypt(10 * time.Second); err != nil {
			t.Errorf("Encrypt after %v ended: %v", fault, err)
		}
	}

	// A module that stops answering: the call ends at the caller's
	// deadline, an hour before the HSM would have answered.
	f.hsm.Delay(time.Hour, hsmtest.MethodSeal)
	start := time.Now()
	err := encrypt(200 * time.Millisecond)
	took := time.Since(start)
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Errorf("Encrypt with a hung HSM: %v, want DeadlineExceeded", err)
	}
	if took > 5*time.Second {
		t.Errorf("Encrypt with a hung HSM took %v: the deadline was 200ms", took)
	}
	f.hsm.Recover()
	if err := encrypt(10 * time.Second); err != nil {
		t.Errorf("Encrypt after the HSM answered again: %v", err)
	}
}
