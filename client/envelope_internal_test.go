package client

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
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
