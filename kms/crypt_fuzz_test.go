package kms

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"testing"

	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore"
)

// cryptFixture is a Service with encryption keys "aes" and "aes2", signing
// keys "ec256" (version 1 disabled, 2 primary), "ec384" and "ed", the
// counting HSM under it, and the public keys of the signing versions.
type cryptFixture struct {
	svc  *Service
	hsm  *hsmtest.Faulty
	pubs map[string]map[uint32]any // by key name and version
}

func newCryptFixture(tb testing.TB) cryptFixture {
	tb.Helper()
	ctx := context.Background()
	svc, b := newFuzzService(tb)
	mustCreate(tb, svc, "aes", keystore.AES256GCM)
	mustCreate(tb, svc, "aes2", keystore.AES256GCM)
	mustCreate(tb, svc, "ec256", keystore.ECP256SHA256)
	mustCreate(tb, svc, "ec384", keystore.ECP384SHA384)
	mustCreate(tb, svc, "ed", keystore.Ed25519)
	if _, err := svc.RotateKey(ctx, "ec256", true); err != nil {
		tb.Fatal(err)
	}
	f := cryptFixture{svc: svc, hsm: b, pubs: map[string]map[uint32]any{}}
	for _, kv := range []struct {
		name    string
		version uint32
	}{{"ec256", 1}, {"ec256", 2}, {"ec384", 1}, {"ed", 1}} {
		pk, err := svc.GetPublicKey(ctx, kv.name, kv.version)
		if err != nil {
			tb.Fatal(err)
		}
		block, _ := pem.Decode([]byte(pk.PEM))
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			tb.Fatal(err)
		}
		if f.pubs[kv.name] == nil {
			f.pubs[kv.name] = map[uint32]any{}
		}
		f.pubs[kv.name][kv.version] = pub
	}
	if _, _, err := svc.DisableKeyVersion(ctx, "ec256", 1); err != nil {
		tb.Fatal(err)
	}
	return f
}

// keyErr returns the errors a request naming name calls for, whatever
// else it holds: none for a key of purpose p, else the name's own.
func (f cryptFixture) keyErr(name string, p keystore.Purpose) []error {
	switch {
	case !namePattern.MatchString(name):
		return []error{ErrInvalidArgument}
	case name == "aes" || name == "aes2":
		if p == keystore.PurposeEncryptDecrypt {
			return nil
		}
	case f.pubs[name] != nil:
		if p == keystore.PurposeSignVerify {
			return nil
		}
	default:
		return []error{ErrNotFound}
	}
	return []error{ErrFailedPrecondition}
}

// pad returns b extended with zeros by n modulo limit+2, so that a small
// fuzz input can reach a size limit and one byte past it.
func pad(b []byte, n uint32, limit int) []byte {
	return append(bytes.Clone(b), make([]byte, int(n%uint32(limit+2)))...)
}

// FuzzEncrypt sends arbitrary Encrypt and GenerateDataKey requests: names,
// plaintext and associated-data sizes up to one byte past their limits.
// A request is accepted exactly when every field is valid, and what it
// makes decrypts (also after ReEncrypt to another key) only with its own
// associated data; a refused request fails with the kind its fields call
// for and makes no HSM call.
func FuzzEncrypt(f *testing.F) {
	f.Add("aes", []byte("hello"), uint32(0), []byte("tea"), uint32(0), false)
	f.Add("aes", []byte{}, uint32(MaxPlaintext), []byte{}, uint32(MaxAssociatedData), true)
	f.Add("aes", []byte{}, uint32(MaxPlaintext+1), []byte{}, uint32(0), false)
	f.Add("aes2", []byte{}, uint32(0), []byte{}, uint32(MaxAssociatedData+1), false)
	f.Add("ed", []byte("x"), uint32(0), []byte{}, uint32(0), false)
	f.Add("missing", []byte("x"), uint32(0), []byte{}, uint32(0), true)
	f.Add("a/b", []byte("x"), uint32(0), []byte{}, uint32(0), false)
	fx := newCryptFixture(f)
	f.Fuzz(func(t *testing.T, name string, plaintext []byte, ptPad uint32, aad []byte, aadPad uint32, withoutPlaintext bool) {
		ctx := context.Background()
		pt := pad(plaintext, ptPad, MaxPlaintext)
		ad := pad(aad, aadPad, MaxAssociatedData)
		want := fx.keyErr(name, keystore.PurposeEncryptDecrypt)
		if len(ad) > MaxAssociatedData {
			want = append(want, ErrTooLarge)
		}
		wantDK := want
		if len(pt) > MaxPlaintext {
			want = append(want, ErrTooLarge)
		}

		fx.hsm.ResetCalls()
		ct, v, err := fx.svc.Encrypt(ctx, name, pt, ad)
		if len(want) > 0 {
			checkKind(t, "Encrypt", err, want...)
			if n := fx.hsm.TotalCalls(); n != 0 {
				t.Fatalf("a refused Encrypt made %d HSM calls", n)
			}
		} else {
			if err != nil || v != 1 || len(ct) != minCiphertext+len(pt) {
				t.Fatalf("Encrypt(%q, %d bytes, %d bytes) = %d bytes, %d, %v", name, len(pt), len(ad), len(ct), v, err)
			}
			fx.checkSealed(t, name, ct, pt, ad)
		}

		fx.hsm.ResetCalls()
		dk, err := fx.svc.GenerateDataKey(ctx, name, ad, withoutPlaintext)
		if len(wantDK) > 0 {
			checkKind(t, "GenerateDataKey", err, wantDK...)
			if n := fx.hsm.TotalCalls(); n != 0 {
				t.Fatalf("a refused GenerateDataKey made %d HSM calls", n)
			}
			return
		}
		if err != nil || dk.Version != 1 || (dk.Plaintext == nil) != withoutPlaintext {
			t.Fatalf("GenerateDataKey(%q, %d bytes, %v) = %+v, %v", name, len(ad), withoutPlaintext, dk, err)
		}
		got, _, err := fx.svc.Decrypt(ctx, name, dk.Ciphertext, ad)
		if err != nil || len(got) != DataKeySize || (!withoutPlaintext && !bytes.Equal(got, dk.Plaintext)) {
			t.Fatalf("Decrypt(data key) = %d bytes, %v", len(got), err)
		}
	})
}

// checkSealed checks that ct, from Encrypt under name, decrypts to pt only
// with ad, and after ReEncrypt to the other key only under that key.
func (f cryptFixture) checkSealed(t *testing.T, name string, ct, pt, ad []byte) {
	t.Helper()
	ctx := context.Background()
	other := map[string]string{"aes": "aes2", "aes2": "aes"}[name]
	got, v, err := f.svc.Decrypt(ctx, name, ct, ad)
	if err != nil || v != 1 || !bytes.Equal(got, pt) {
		t.Fatalf("Decrypt(Encrypt(%d bytes)) = %d bytes, %d, %v", len(pt), len(got), v, err)
	}
	if len(ad) < MaxAssociatedData {
		_, _, err = f.svc.Decrypt(ctx, name, ct, append(bytes.Clone(ad), 0))
		wantDecryptError(t, "Decrypt with other associated data", err, ct, nil)
	}
	_, _, err = f.svc.Decrypt(ctx, other, ct, ad)
	wantDecryptError(t, "Decrypt under another key", err, ct, nil)
	re, err := f.svc.ReEncrypt(ctx, name, ct, ad, other)
	if err != nil || re.SourceVersion != 1 || re.Version != 1 {
		t.Fatalf("ReEncrypt(%s to %s) = %+v, %v", name, other, re, err)
	}
	if got, _, err := f.svc.Decrypt(ctx, other, re.Ciphertext, ad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Decrypt(ReEncrypt) = %d bytes, %v", len(got), err)
	}
	_, _, err = f.svc.Decrypt(ctx, name, re.Ciphertext, ad)
	wantDecryptError(t, "Decrypt of a re-encrypted ciphertext under its source key", err, re.Ciphertext, nil)
}

// FuzzSign sends arbitrary Sign and Verify requests: names, versions, input
// kinds, digests and messages of any length, encodings and signatures.
// A Sign request is accepted exactly when every field is valid, and its
// signature verifies, through Verify and independently; Verify of an
// arbitrary signature agrees with an independent check. A refused request
// fails with the kind its fields call for, and a refused Sign makes no HSM
// call.
func FuzzSign(f *testing.F) {
	digest := sha256.Sum256([]byte("hello"))
	f.Add("ec256", uint32(0), int8(InputMessage), []byte("hello"), uint32(0), int8(EncodingDefault), []byte(nil))
	f.Add("ec256", uint32(2), int8(InputDigest), digest[:], uint32(0), int8(EncodingRaw), []byte(nil))
	f.Add("ec256", uint32(1), int8(InputDigest), digest[:], uint32(0), int8(EncodingDER), []byte(nil))
	f.Add("ec256", uint32(3), int8(InputDigest), digest[:31], uint32(0), int8(EncodingDER), []byte(nil))
	f.Add("ec384", uint32(0), int8(InputDigest), make([]byte, 48), uint32(0), int8(EncodingRaw), make([]byte, 96))
	f.Add("ed", uint32(0), int8(InputMessage), []byte{}, uint32(MaxMessage), int8(EncodingDefault), make([]byte, 64))
	f.Add("ed", uint32(0), int8(InputMessage), []byte{}, uint32(MaxMessage+1), int8(EncodingDefault), []byte(nil))
	f.Add("ed", uint32(1), int8(InputDigest), digest[:], uint32(0), int8(EncodingRaw), []byte(nil))
	f.Add("aes", uint32(0), int8(InputNone), []byte{}, uint32(0), int8(3), []byte(nil))
	f.Add("ec256", uint32(0), int8(InputMessage), []byte("x"), uint32(0), int8(0), []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01})
	fx := newCryptFixture(f)
	f.Fuzz(func(t *testing.T, name string, version uint32, kind int8, data []byte, dataPad uint32, enc int8, sig []byte) {
		ctx := context.Background()
		req := SignRequest{Name: name, Version: version, Kind: InputKind(kind), Data: pad(data, dataPad, MaxMessage), Encoding: Encoding(enc)}
		want, input := fx.signErrors(req)
		fx.hsm.ResetCalls()
		s, err := fx.svc.Sign(ctx, req)
		vreq := VerifyRequest{Name: req.Name, Version: req.Version, Kind: req.Kind, Data: req.Data, Encoding: req.Encoding}
		if len(want) > 0 {
			checkKind(t, "Sign", err, want...)
			if n := fx.hsm.TotalCalls(); n != 0 {
				t.Fatalf("a refused Sign made %d HSM calls", n)
			}
			_, _, err := fx.svc.Verify(ctx, VerifyRequest{Name: req.Name, Version: req.Version, Kind: req.Kind, Data: req.Data, Signature: sig, Encoding: req.Encoding})
			checkKind(t, "Verify", err, want...)
			return
		}
		v := fx.version(name, version)
		if err != nil || s.Version != v {
			t.Fatalf("Sign(%q v%d, kind %d, %d bytes, encoding %d) = %+v, %v", name, version, kind, len(req.Data), enc, s, err)
		}
		pub := fx.pubs[name][v]
		if !verifyIndependently(pub, input, s.Signature, req.Encoding) {
			t.Fatalf("signature %x does not verify", s.Signature)
		}
		vreq.Signature = s.Signature
		if ok, got, err := fx.svc.Verify(ctx, vreq); !ok || got != v || err != nil {
			t.Fatalf("Verify(own signature) = %v, %d, %v", ok, got, err)
		}
		vreq.Signature = sig
		ok, _, err := fx.svc.Verify(ctx, vreq)
		if err != nil || ok != verifyIndependently(pub, input, sig, req.Encoding) {
			t.Fatalf("Verify(%x) = %v, %v; independent check disagrees", sig, ok, err)
		}
	})
}

// version returns the version a request for version v of name uses.
func (f cryptFixture) version(name string, v uint32) uint32 {
	if v == 0 && name == "ec256" {
		return 2
	}
	if v == 0 {
		return 1
	}
	return v
}

// signErrors returns the errors a Sign or Verify request calls for, and
// for a valid one, the input its signature covers.
func (f cryptFixture) signErrors(req SignRequest) ([]error, []byte) {
	var want []error
	if req.Kind == InputMessage && len(req.Data) > MaxMessage {
		want = append(want, ErrTooLarge)
	}
	if req.Kind != InputDigest && req.Kind != InputMessage {
		want = append(want, ErrInvalidArgument)
	}
	if req.Encoding != EncodingDefault && req.Encoding != EncodingDER && req.Encoding != EncodingRaw {
		want = append(want, ErrInvalidArgument)
	}
	if kerr := f.keyErr(req.Name, keystore.PurposeSignVerify); kerr != nil {
		return append(want, kerr...), nil
	}
	v := f.version(req.Name, req.Version)
	if _, ok := f.pubs[req.Name][v]; !ok {
		return append(want, ErrNotFound), nil
	}
	if req.Name == "ec256" && v == 1 {
		return append(want, ErrFailedPrecondition), nil
	}
	var input []byte
	switch req.Name {
	case "ed":
		if req.Kind == InputDigest || req.Encoding == EncodingRaw {
			want = append(want, ErrInvalidArgument)
		}
		input = req.Data
	case "ec256":
		input = digestOf(req, sha256.Size, func(b []byte) []byte { s := sha256.Sum256(b); return s[:] })
	case "ec384":
		input = digestOf(req, sha512.Size384, func(b []byte) []byte { s := sha512.Sum384(b); return s[:] })
	}
	if input == nil {
		want = append(want, ErrInvalidArgument)
	}
	return want, input
}

// digestOf returns the digest a request signs, or nil for a digest of the
// wrong size.
func digestOf(req SignRequest, size int, hash func([]byte) []byte) []byte {
	if req.Kind == InputMessage {
		return hash(req.Data)
	}
	if len(req.Data) != size {
		return nil
	}
	return req.Data
}

// verifyIndependently checks sig over input (a digest, or an Ed25519
// message) with the standard library alone.
func verifyIndependently(pub any, input, sig []byte, enc Encoding) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(k, input, sig)
	case *ecdsa.PublicKey:
		if enc != EncodingRaw {
			return ecdsa.VerifyASN1(k, input, sig)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		return ecdsa.Verify(k, input, r, s)
	}
	panic(fmt.Sprintf("unexpected public key %T", pub))
}
