package kms

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/sigil-kms/sigil/hsm"
)

// FuzzParseCiphertext feeds arbitrary bytes to the ciphertext parser and to
// Decrypt. The parser accepts exactly the documented v1 layout, and what it
// accepts re-encodes to the same bytes; Decrypt, under either golden key,
// returns the one decryption error for everything but the golden
// ciphertext itself.
func FuzzParseCiphertext(f *testing.F) {
	for _, g := range goldenV1 {
		f.Add(mustHex(g.want))
	}
	f.Add([]byte{})
	f.Add([]byte{formatV1})
	f.Add(append(header{}.marshal(), make([]byte, hsm.TagSize)...))             // version 0
	f.Add(append(header{version: 1}.marshal(), make([]byte, hsm.TagSize-1)...)) // one byte short
	svc, golden := newGoldenService(f)
	f.Fuzz(func(t *testing.T, ct []byte) {
		h, body, ok := parseCiphertext(ct)
		want := len(ct) >= minCiphertext && ct[0] == formatV1 && binary.BigEndian.Uint32(ct[17:21]) != 0
		if ok != want {
			t.Fatalf("parseCiphertext(%x) ok = %v, want %v", ct, ok, want)
		}
		if ok {
			if h.version == 0 || len(body) < hsm.TagSize {
				t.Fatalf("parsed version %d, body of %d bytes", h.version, len(body))
			}
			if re := append(h.marshal(), body...); !bytes.Equal(re, ct) {
				t.Fatalf("re-encoded\n %x\nparsed from\n %x", re, ct)
			}
		}
		for _, g := range golden {
			checkDecrypt(t, svc, g, ct, nil)
		}
	})
}

// FuzzDecrypt truncates, flips bits of and extends the golden ciphertexts,
// and changes their associated data: Decrypt and ReEncrypt succeed only on
// the unchanged ciphertext with its own associated data, and fail with the
// one decryption error otherwise.
func FuzzDecrypt(f *testing.F) {
	f.Add(uint8(0), uint16(0), uint16(0), byte(0), []byte(nil), []byte(nil))
	f.Add(uint8(1), uint16(0), uint16(0), byte(0), []byte(nil), []byte("tea"))
	f.Add(uint8(1), uint16(0), uint16(0), byte(0), []byte(nil), []byte("tex"))
	f.Add(uint8(1), uint16(1), uint16(0), byte(0), []byte(nil), []byte("tea"))
	f.Add(uint8(0), uint16(0), uint16(0), byte(0x03), []byte(nil), []byte(nil))    // format byte
	f.Add(uint8(1), uint16(0), uint16(20), byte(0x07), []byte(nil), []byte("tea")) // version 7 to 0
	f.Add(uint8(1), uint16(0), uint16(5), byte(0x80), []byte(nil), []byte("tea"))  // key id
	f.Add(uint8(0), uint16(0), uint16(40), byte(0x01), []byte(nil), []byte(nil))   // tag
	f.Add(uint8(0), uint16(0), uint16(0), byte(0), []byte{0}, []byte(nil))
	svc, golden := newGoldenService(f)
	f.Fuzz(func(t *testing.T, which uint8, cut, pos uint16, mask byte, tail, aad []byte) {
		g := golden[int(which)%len(golden)]
		ct := bytes.Clone(g.ciphertext)
		if mask != 0 {
			ct[int(pos)%len(ct)] ^= mask
		}
		ct = append(ct[:len(ct)-int(cut)%(len(ct)+1)], tail...)
		checkDecrypt(t, svc, g, ct, aad)
		checkReEncrypt(t, svc, g, ct, aad)
	})
}

// intact reports whether ct and aad are the golden case's own.
func (g goldenCase) intact(ct, aad []byte) bool {
	return bytes.Equal(ct, g.ciphertext) && bytes.Equal(aad, g.aad)
}

// checkDecrypt decrypts ct with aad under the golden case's key.
func checkDecrypt(t *testing.T, svc *Service, g goldenCase, ct, aad []byte) {
	t.Helper()
	pt, v, err := svc.Decrypt(context.Background(), g.name, ct, aad)
	if g.intact(ct, aad) {
		if err != nil || v != g.version || !bytes.Equal(pt, g.plaintext) {
			t.Fatalf("Decrypt(golden %s) = %x, %d, %v; want %x, %d", g.name, pt, v, err, g.plaintext, g.version)
		}
		return
	}
	wantDecryptError(t, "Decrypt", err, ct, aad)
	if pt != nil || v != 0 {
		t.Fatalf("failed Decrypt returned %x, version %d", pt, v)
	}
}

// checkReEncrypt re-encrypts ct with aad under the golden case's key, to
// the same key.
func checkReEncrypt(t *testing.T, svc *Service, g goldenCase, ct, aad []byte) {
	t.Helper()
	ctx := context.Background()
	re, err := svc.ReEncrypt(ctx, g.name, ct, aad, "")
	if !g.intact(ct, aad) {
		wantDecryptError(t, "ReEncrypt", err, ct, aad)
		return
	}
	if err != nil || re.SourceVersion != g.version {
		t.Fatalf("ReEncrypt(golden %s) = %+v, %v", g.name, re, err)
	}
	pt, _, err := svc.Decrypt(ctx, g.name, re.Ciphertext, aad)
	if err != nil || !bytes.Equal(pt, g.plaintext) {
		t.Fatalf("Decrypt(ReEncrypt(golden %s)) = %x, %v; want %x", g.name, pt, err, g.plaintext)
	}
}

// wantDecryptError fails t unless err is the one error of every
// decryption failure (or, for an oversized ciphertext or associated data,
// ErrTooLarge).
func wantDecryptError(t *testing.T, op string, err error, ct, aad []byte) {
	t.Helper()
	if len(ct) > MaxCiphertext || len(aad) > MaxAssociatedData {
		checkKind(t, op, err, ErrTooLarge)
		return
	}
	var kerr *Error
	if !errors.As(err, &kerr) || *kerr != *errDecrypt {
		t.Fatalf("%s of a changed ciphertext: err = %v, want %v", op, err, errDecrypt)
	}
}
