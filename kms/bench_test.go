package kms

import (
	"context"
	"testing"

	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
)

func BenchmarkHeaderMarshal(b *testing.B) {
	h := header{version: 7}
	b.ReportAllocs()
	for b.Loop() {
		_ = h.marshal()
	}
}

func BenchmarkParseCiphertext(b *testing.B) {
	ct := append(header{version: 7}.marshal(), make([]byte, 1024+16)...)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := parseCiphertext(ct); !ok {
			b.Fatal("rejected")
		}
	}
}

// BenchmarkEncrypt1KiB measures the core's own cost on in-memory fakes.
func BenchmarkEncrypt1KiB(b *testing.B) {
	ctx := context.Background()
	svc := New(hsmtest.NewMemory(), keystoretest.NewMemory())
	if _, err := svc.CreateKey(ctx, CreateKeyRequest{Name: "k", Algorithm: keystore.AES256GCM}); err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		if _, _, err := svc.Encrypt(ctx, "k", pt, nil); err != nil {
			b.Fatal(err)
		}
	}
}
