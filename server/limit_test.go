package server

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/audit"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/kms"
)

// gatedSeal is a backend whose Seal reports its entry on entered and then
// waits for release.
type gatedSeal struct {
	hsm.Backend
	entered chan struct{}
	release chan struct{}
}

func (g gatedSeal) Seal(ctx context.Context, id, nonce, plaintext, aad []byte) ([]byte, error) {
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Backend.Seal(ctx, id, nonce, plaintext, aad)
}

// TestInFlightLimit fills the in-flight limit with Encrypts held inside
// the HSM and checks that one more RPC is refused at once with
// ResourceExhausted, and audited, and that service resumes once the held
// calls finish.
func TestInFlightLimit(t *testing.T) {
	const limit = 3
	g := gatedSeal{Backend: hsmtest.NewMemory(), entered: make(chan struct{}), release: make(chan struct{})}
	log := audit.NewMemory(nil)
	h := New(kms.New(g, keystoretest.NewMemory()), Options{MaxInFlight: limit, Audit: log, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := sigilv1connect.NewKeyManagementServiceClient(srv.Client(), srv.URL)
	grpc := sigilv1connect.NewKeyManagementServiceClient(srv.Client(), srv.URL, connect.WithGRPC())
	ctx := context.Background()
	createAES(t, c, "k")

	var wg sync.WaitGroup
	errs := make(chan error, limit)
	for range limit {
		wg.Go(func() {
			_, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("x")})
			errs <- err
		})
	}
	for range limit {
		<-g.entered
	}
	_, err := c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "k"})
	wantCode(t, err, connect.CodeResourceExhausted)
	_, err = grpc.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "k"})
	wantCode(t, err, connect.CodeResourceExhausted)
	close(g.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("held Encrypt: %v", err)
		}
	}
	if _, err := c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "k"}); err != nil {
		t.Fatalf("GetKey after the load: %v", err)
	}
	refused := 0
	for _, r := range log.Records() {
		if r.RPC == "GetKey" && r.Outcome == connect.CodeResourceExhausted.String() {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("%d refused GetKeys audited, want 2", refused)
	}
}
