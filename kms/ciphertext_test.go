package kms

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"testing"

	"github.com/google/uuid"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
)

// fixedHSM is an hsm.Backend whose every key is the same known AES key, so
// that the exact bytes of a ciphertext can be pinned by golden vectors.
type fixedHSM struct {
	hsm.Backend
	aead cipher.AEAD
}

func newFixedHSM(t *testing.T, key []byte) *fixedHSM {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return &fixedHSM{aead: aead}
}

func (f *fixedHSM) GenerateKey(context.Context, hsm.KeySpec) (crypto.PublicKey, error) {
	return nil, nil
}

func (f *fixedHSM) Seal(_ context.Context, _, nonce, pt, aad []byte) ([]byte, error) {
	return f.aead.Seal(nil, nonce, pt, aad), nil
}

func (f *fixedHSM) Open(_ context.Context, _, nonce, ct, aad []byte) ([]byte, error) {
	pt, err := f.aead.Open(nil, nonce, ct, aad)
	if err != nil {
		return nil, hsm.ErrDecrypt
	}
	return pt, nil
}

// counter is a deterministic "random" source: 0x00, 0x01, 0x02, ...
type counter struct{ n byte }

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n++
	}
	return len(p), nil
}

// Golden vectors for ciphertext format v1. Changing the format breaks these
// on purpose: every ciphertext ever issued must keep decrypting.
var goldenV1 = []struct {
	name      string
	keyID     string
	version   uint32
	nonce     string
	plaintext string
	aad       string
	want      string
}{
	{
		name:      "empty",
		keyID:     "00112233-4455-6677-8899-aabbccddeeff",
		version:   1,
		nonce:     "000102030405060708090a0b",
		plaintext: "",
		aad:       "",
		want:      "0100112233445566778899aabbccddeeff00000001000102030405060708090a0bd86276ab7e66d44c162372a5932c6a44",
	},
	{
		name:      "hello with aad, version 7",
		keyID:     "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
		version:   7,
		nonce:     "a0a1a2a3a4a5a6a7a8a9aaab",
		plaintext: "68656c6c6f",
		aad:       "746561",
		want:      "010f1e2d3c4b5a69788796a5b4c3d2e1f000000007a0a1a2a3a4a5a6a7a8a9aaab8e7d10412a6d2e5e51222a208b79e539163cbee5ce",
	},
	{
		name:      "version 2^32-1",
		keyID:     "ffffffff-ffff-ffff-ffff-ffffffffffff",
		version:   0xffffffff,
		nonce:     "ffffffffffffffffffffffff",
		plaintext: "00",
		aad:       "",
		want:      "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff3a58231501be03642c8884870e30b85ce0",
	},
}

// goldenKey is the AES key under which the golden vectors were made.
var goldenKey = mustHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestGoldenV1(t *testing.T) {
	f := newFixedHSM(t, goldenKey)
	for _, tc := range goldenV1 {
		t.Run(tc.name, func(t *testing.T) {
			var h header
			h.keyID = uuid.MustParse(tc.keyID)
			h.version = tc.version
			copy(h.nonce[:], mustHex(tc.nonce))
			hdr := h.marshal()
			sealed, _ := f.Seal(context.Background(), nil, h.nonce[:], mustHex(tc.plaintext), associatedData(hdr, mustHex(tc.aad)))
			got := hex.EncodeToString(append(hdr, sealed...))
			if got != tc.want {
				t.Errorf("ciphertext = %s, want %s", got, tc.want)
			}

			ct := mustHex(tc.want)
			ph, body, ok := parseCiphertext(ct)
			if !ok || ph != h {
				t.Fatalf("parseCiphertext = %+v, %v; want %+v", ph, ok, h)
			}
			pt, err := f.Open(context.Background(), nil, ph.nonce[:], body, associatedData(ct[:headerSize], mustHex(tc.aad)))
			if err != nil || !bytes.Equal(pt, mustHex(tc.plaintext)) {
				t.Fatalf("open = %x, %v", pt, err)
			}
		})
	}
}

// TestServiceWritesGoldenFormat checks that the Service itself lays out the
// ciphertext exactly as the golden vector: key id from the store, version,
// the nonce read from its random source, then the sealed body.
func TestServiceWritesGoldenFormat(t *testing.T) {
	ctx := context.Background()
	store := keystoretest.NewMemory()
	src := &counter{}
	svc := New(newFixedHSM(t, goldenKey), store, WithRandom(src))
	k, err := svc.CreateKey(ctx, CreateKeyRequest{Name: "golden", Algorithm: keystore.AES256GCM})
	if err != nil {
		t.Fatal(err)
	}
	// The counter has handed out 16 bytes of key id and 16 of HSM id; the
	// nonce is the next 12.
	nonce := mustHex("202122232425262728292a2b")
	ct, v, err := svc.Encrypt(ctx, "golden", []byte("hello"), []byte("tea"))
	if err != nil || v != 1 {
		t.Fatalf("Encrypt = %d, %v", v, err)
	}
	h := header{keyID: k.ID, version: 1}
	copy(h.nonce[:], nonce)
	hdr := h.marshal()
	sealed, _ := newFixedHSM(t, goldenKey).Seal(ctx, nil, nonce, []byte("hello"), associatedData(hdr, []byte("tea")))
	if want := append(hdr, sealed...); !bytes.Equal(ct, want) {
		t.Fatalf("ciphertext\n got %x\nwant %x", ct, want)
	}
}

func TestHeaderLayout(t *testing.T) {
	h := header{version: 0x01020304}
	for i := range h.keyID {
		h.keyID[i] = 0xaa
	}
	for i := range h.nonce {
		h.nonce[i] = 0xbb
	}
	want := "01" + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + "01020304" + "bbbbbbbbbbbbbbbbbbbbbbbb"
	if got := hex.EncodeToString(h.marshal()); got != want {
		t.Fatalf("header = %s, want %s", got, want)
	}
}

func TestParseCiphertextRejects(t *testing.T) {
	valid := append(header{version: 1}.marshal(), make([]byte, hsm.TagSize)...)
	if _, _, ok := parseCiphertext(valid); !ok {
		t.Fatal("minimal ciphertext rejected")
	}
	cases := map[string][]byte{
		"empty":       nil,
		"short":       valid[:len(valid)-1],
		"format 0x02": append([]byte{0x02}, valid[1:]...),
		"version 0":   append(header{}.marshal(), make([]byte, hsm.TagSize)...),
	}
	for name, ct := range cases {
		if _, _, ok := parseCiphertext(ct); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
