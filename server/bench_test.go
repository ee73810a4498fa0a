package server

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/kms"
)

// BenchmarkHandlerEncrypt1KiB measures the HTTP and Connect path over
// in-memory fakes (dev mode, no audit): everything but the HSM and the
// database.
func BenchmarkHandlerEncrypt1KiB(b *testing.B) {
	ctx := context.Background()
	srv := httptest.NewUnstartedServer(New(kms.New(hsmtest.NewMemory(), keystoretest.NewMemory()), Options{Logger: slog.New(slog.DiscardHandler)}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	b.Cleanup(srv.Close)
	c := sigilv1connect.NewKeyManagementServiceClient(srv.Client(), srv.URL)
	if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
		b.Fatal(err)
	}
	req := &sigilv1.EncryptRequest{Name: "k", Plaintext: make([]byte, 1024)}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Encrypt(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
