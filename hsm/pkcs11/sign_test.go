package pkcs11

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/softhsm"
)

// wantKeyType is the CKA_KEY_TYPE of each key pair type's private key.
var wantKeyType = map[hsm.KeyType]uint{
	hsm.ECP256: p11.CKK_EC, hsm.ECP384: p11.CKK_EC,
	hsm.RSA2048: p11.CKK_RSA, hsm.RSA3072: p11.CKK_RSA, hsm.RSA4096: p11.CKK_RSA,
	hsm.Ed25519: ckkECEdwards,
}

func TestKeyPairAttributes(t *testing.T) {
	b, tok := newBackend(t)
	types := make(map[string]hsm.KeyType)
	for _, typ := range hsmtest.KeyPairTypes {
		id, _ := hsmtest.NewKeyPair(t, b, typ)
		types[string(id)] = typ
	}
	objs := tok.Objects(t)
	if len(objs) != len(types) {
		t.Errorf("%d objects on the token after generating %d key pairs, want only the private keys", len(objs), len(types))
	}
	for _, o := range objs {
		typ, ok := types[string(o.ID)]
		if !ok || o.Class != p11.CKO_PRIVATE_KEY {
			t.Errorf("unexpected object: class %d, id %x, label %q", o.Class, o.ID, o.Label)
			continue
		}
		want := softhsm.Object{
			Class: p11.CKO_PRIVATE_KEY, KeyType: wantKeyType[typ], ID: o.ID, Label: fmt.Sprintf("sigil:test:%x", o.ID[:4]),
			Token: true, Private: true, Sensitive: true, AlwaysSensitive: true,
			NeverExtractable: true, Local: true, Sign: true,
		}
		if fmt.Sprintf("%+v", o) != fmt.Sprintf("%+v", want) {
			t.Errorf("%v private key attributes\n got %+v\nwant %+v", typ, o, want)
		}
	}
}

// createStrayPublicKey creates a token public key object with the
// identifier, as another tool might, holding a key unrelated to Sigil's.
func createStrayPublicKey(t *testing.T, b *Backend, id []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	point, err := asn1.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	err = b.session(t.Context(), func(s p11.SessionHandle) error {
		_, err := b.mod.ctx.CreateObject(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_VERIFY, true),
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_LABEL, "stray"),
			p11.NewAttribute(p11.CKA_EC_PARAMS, oidP256),
			p11.NewAttribute(p11.CKA_EC_POINT, point),
		})
		return err
	})
	if err != nil {
		t.Fatalf("C_CreateObject: %v", err)
	}
}

func TestStrayPublicKeyIgnored(t *testing.T) {
	b, tok := newBackend(t)
	ctx := t.Context()
	id, pub := hsmtest.NewKeyPair(t, b, hsm.ECP256)
	createStrayPublicKey(t, b, id)
	lone := hsmtest.NewID(t)
	createStrayPublicKey(t, b, lone)

	b2 := openToken(t, tok, 0) // nothing cached: it must search
	input := hsmtest.SignInput(hsm.ECP256, hsm.ECDSA, []byte("x"))
	sig, err := b2.Sign(ctx, id, input, hsm.ECDSA)
	if err != nil {
		t.Fatalf("Sign with a public key object sharing the id: %v", err)
	}
	if err := hsmtest.Verify(pub, hsm.ECDSA, input, sig); err != nil {
		t.Fatal(err)
	}

	// A public key object alone is not a key.
	b3 := openToken(t, tok, 0)
	if ok, err := b3.Exists(ctx, lone); ok || err != nil {
		t.Errorf("Exists(public key only) = %v, %v", ok, err)
	}
	if _, err := b3.Sign(ctx, lone, input, hsm.ECDSA); !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("Sign(public key only): %v, want ErrNotFound", err)
	}
	if err := b3.Destroy(ctx, lone); !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("Destroy(public key only): %v, want ErrNotFound", err)
	}

	// Destroying the key takes the public key object sharing its id along.
	if err := b2.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, o := range tok.Objects(t) {
		if !bytes.Equal(o.ID, lone) {
			t.Errorf("object left after Destroy: class %d, id %x, label %q", o.Class, o.ID, o.Label)
		}
	}
}

func TestSignCached(t *testing.T) {
	b, tok := newBackend(t)
	ctx := t.Context()
	ec, _ := hsmtest.NewKeyPair(t, b, hsm.ECP384)
	ed, _ := hsmtest.NewKeyPair(t, b, hsm.Ed25519)
	digest := hsmtest.SignInput(hsm.ECP384, hsm.ECDSA, []byte("x"))
	before := b.finds.Load()
	for range 5 {
		if _, err := b.Sign(ctx, ec, digest, hsm.ECDSA); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Sign(ctx, ed, []byte("x"), hsm.EdDSA); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Sign(ctx, ec, []byte("x"), hsm.EdDSA); !errors.Is(err, hsm.ErrInvalid) {
			t.Fatalf("EdDSA with an ECDSA key: %v", err)
		}
	}
	if n := b.finds.Load() - before; n != 0 {
		t.Errorf("%d C_FindObjects searches on the request path after GenerateKey", n)
	}

	// A second Backend learns the key's type and curve on its one search.
	b2 := openToken(t, tok, 0)
	for range 3 {
		sig, err := b2.Sign(ctx, ec, digest, hsm.ECDSA)
		if err != nil || len(sig) != 96 {
			t.Fatalf("Sign through a second Backend: %d bytes, %v", len(sig), err)
		}
	}
	if n := b2.finds.Load(); n != 1 {
		t.Errorf("second Backend searched %d times, want 1", n)
	}
	v, _ := b2.handles.Load(string(ec))
	if k, _ := v.(key); k.class != p11.CKO_PRIVATE_KEY || k.typ != p11.CKK_EC || k.ecSize != 48 {
		t.Errorf("cached key %+v", k)
	}
}

// TestRefusedByModule checks that the module's own refusal of a key is
// hsm.ErrInvalid, by making the cache lie about the key's type so that the
// Backend's check lets the call through.
func TestRefusedByModule(t *testing.T) {
	b, _ := newBackend(t)
	ctx := t.Context()
	aes := hsmtest.NewKey(t, b)
	ec, _ := hsmtest.NewKeyPair(t, b, hsm.ECP256)
	// lie caches a false class and type for the key. A failed call may
	// have closed the last session, which logs the token out and renumbers
	// the handles, so it looks the key up afresh each time.
	lie := func(id []byte, class, typ uint) {
		b.handles.Delete(string(id))
		k, err := b.lookup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		b.handles.Store(string(id), key{h: k.h, class: class, typ: typ, ecSize: 32})
	}
	digest := hsmtest.SignInput(hsm.ECP256, hsm.ECDSA, []byte("x"))
	check := func(what, call string, err error) {
		t.Helper()
		if !errors.Is(err, hsm.ErrInvalid) || !strings.Contains(err.Error(), call) {
			t.Errorf("%s: %v, want ErrInvalid from %s", what, err, call)
		}
	}

	lie(aes, p11.CKO_PRIVATE_KEY, p11.CKK_EC)
	_, err := b.Sign(ctx, aes, digest, hsm.ECDSA)
	check("ECDSA with an AES key", "C_SignInit", err)
	// SoftHSM 2.6.1 does not check a key pair's type in C_SignInit: ECDSA
	// with an Ed25519 key, or EdDSA with an ECDSA key, fails in C_Sign with
	// CKR_GENERAL_ERROR, and PSS with an Ed25519 key crashes the process.
	// Only the Backend's own check guards against those, so they are not
	// tried here.
	lie(ec, p11.CKO_SECRET_KEY, p11.CKK_AES)
	_, err = b.Seal(ctx, ec, hsmtest.NewNonce(t), []byte("x"), nil)
	check("Seal with an ECDSA key", "C_EncryptInit", err)
	_, err = b.Open(ctx, ec, hsmtest.NewNonce(t), make([]byte, 40), nil)
	check("Open with an ECDSA key", "C_DecryptInit", err)

	// With the truth restored, everything works.
	b.handles.Delete(string(aes))
	b.handles.Delete(string(ec))
	if _, err := b.Sign(ctx, ec, digest, hsm.ECDSA); err != nil {
		t.Errorf("Sign after refusals: %v", err)
	}
	if _, err := b.Seal(ctx, aes, hsmtest.NewNonce(t), []byte("x"), nil); err != nil {
		t.Errorf("Seal after refusals: %v", err)
	}
}
