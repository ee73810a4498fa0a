package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
)

// TestEnvelopeGoldenV1 pins envelope format v1: changing it breaks every
// envelope already stored.
func TestEnvelopeGoldenV1(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	aead, err := newGCM(key)
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := hex.DecodeString("a0a1a2a3a4a5a6a7a8a9aaab")
	const want = "010010777261707065642d646174612d6b6579a0a1a2a3a4a5a6a7a8a9aaab8e7d10412a51c6f6374fcd2f0001f935ca79261d86"
	got := sealWith(aead, []byte("wrapped-data-key"), nonce, []byte("hello"), []byte("ad"))
	if hex.EncodeToString(got) != want {
		t.Fatalf("envelope\n got %x\nwant %s", got, want)
	}
	wrapped, n, body, hdr, err := parseEnvelope(got)
	if err != nil || string(wrapped) != "wrapped-data-key" || !bytes.Equal(n, nonce) || len(hdr) != 3+16+12 {
		t.Fatalf("parse = %q %x %v", wrapped, n, err)
	}
	pt, err := aead.Open(nil, n, body, append(append([]byte{}, hdr...), "ad"...))
	if err != nil || string(pt) != "hello" {
		t.Fatalf("open = %q, %v", pt, err)
	}
}

func TestParseEnvelopeRejects(t *testing.T) {
	good, _ := hex.DecodeString("010010777261707065642d646174612d6b6579a0a1a2a3a4a5a6a7a8a9aaab8e7d10412a51c6f6374fcd2f0001f935ca79261d86")
	for name, b := range map[string][]byte{
		"empty":        nil,
		"format 2":     append([]byte{2}, good[1:]...),
		"short":        good[:3+16+12+15],
		"length lies":  append([]byte{1, 0xff, 0xff}, good[3:]...),
		"just the tag": good[:3],
	} {
		if _, _, _, _, err := parseEnvelope(b); !errors.Is(err, ErrEnvelope) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// fakeKMS answers GenerateDataKey with fresh keys and counts the calls.
type fakeKMS struct {
	sigilv1connect.KeyManagementServiceClient
	calls int
}

func (f *fakeKMS) GenerateDataKey(context.Context, *sigilv1.GenerateDataKeyRequest) (*sigilv1.GenerateDataKeyResponse, error) {
	f.calls++
	return &sigilv1.GenerateDataKeyResponse{Plaintext: bytes.Repeat([]byte{byte(f.calls)}, 32), Ciphertext: []byte{byte(f.calls)}}, nil
}

// TestEnvelopeMaxAge checks that a cached data key stops sealing once it
// is MaxAge old.
func TestEnvelopeMaxAge(t *testing.T) {
	f := &fakeKMS{}
	env := (&Client{f}).Envelope("k", EnvelopeOptions{MaxAge: time.Minute, MaxMessages: 1000})
	now := time.Unix(1_000_000, 0)
	env.now = func() time.Time { return now }
	seal := func() {
		t.Helper()
		if _, err := env.Seal(t.Context(), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	seal()
	now = now.Add(59 * time.Second)
	seal()
	if f.calls != 1 {
		t.Fatalf("%d data keys within MaxAge, want 1", f.calls)
	}
	now = now.Add(time.Second)
	seal()
	if f.calls != 2 {
		t.Fatalf("%d data keys after MaxAge, want 2", f.calls)
	}
}
