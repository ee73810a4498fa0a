package server

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/hsm/pkcs11"
	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/softhsm"
)

func TestMain(m *testing.M) { softhsm.Main(m) }

type real struct {
	token *softhsm.Token
	store keystore.Store
	hsm   *hsmtest.Faulty // counts calls to the real backend
	svc   *kms.Service
	*testServer
}

// startReal serves Sigil over a fresh SoftHSM token and a fresh Postgres
// database.
func startReal(t *testing.T, opts ...kms.Option) real {
	t.Helper()
	tok := softhsm.NewToken(t)
	store := postgrestest.NewStore(t)
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	counted := hsmtest.NewFaulty(b)
	svc := kms.New(counted, store, opts...)
	return real{token: tok, store: store, hsm: counted, svc: svc, testServer: startService(t, svc)}
}

func TestRealRoundTripAndRotations(t *testing.T) {
	ctx := context.Background()
	r := startReal(t)
	createAES(t, r.client, "orders")
	type sealed struct {
		pt, ad, ct []byte
		version    uint32
	}
	var all []sealed
	encrypt := func(i int) {
		pt := bytes.Repeat([]byte{byte(i)}, i*37)
		ad := []byte(fmt.Sprintf("row-%d", i))
		res, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "orders", Plaintext: pt, AssociatedData: ad})
		if err != nil {
			t.Fatalf("Encrypt #%d: %v", i, err)
		}
		all = append(all, sealed{pt, ad, res.GetCiphertext(), res.GetKeyVersion()})
	}
	encrypt(0)
	for i := 1; i <= 20; i++ {
		res, err := r.client.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "orders"})
		if err != nil {
			t.Fatalf("RotateKey #%d: %v", i, err)
		}
		if v := res.GetKeyVersion(); v.GetVersion() != uint32(i+1) || v.GetState() != sigilv1.VersionState_VERSION_STATE_ENABLED {
			t.Fatalf("RotateKey #%d = %v", i, v)
		}
		encrypt(i)
	}
	for i, s := range all {
		if s.version != uint32(i+1) {
			t.Fatalf("ciphertext %d used version %d", i, s.version)
		}
		res, err := r.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "orders", Ciphertext: s.ct, AssociatedData: s.ad})
		if err != nil || !bytes.Equal(res.GetPlaintext(), s.pt) || res.GetKeyVersion() != s.version {
			t.Fatalf("Decrypt v%d: %v", s.version, err)
		}
	}
	vs, err := r.client.ListKeyVersions(ctx, &sigilv1.ListKeyVersionsRequest{Name: "orders"})
	if err != nil || len(vs.GetKeyVersions()) != 21 {
		t.Fatalf("ListKeyVersions = %d versions, %v", len(vs.GetKeyVersions()), err)
	}
	k, err := r.client.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "orders"})
	if err != nil || k.GetKey().GetPrimaryVersion() != 21 {
		t.Fatalf("GetKey = %v, %v", k, err)
	}
	checkObjects(t, r.token, 21)
}

// checkObjects reads every object in the token back through PKCS#11 and
// checks that there are want AES keys, each sensitive, never extractable
// and able only to encrypt and decrypt.
func checkObjects(t *testing.T, tok *softhsm.Token, want int) {
	t.Helper()
	objs := tok.Objects(t)
	if len(objs) != want {
		t.Fatalf("token holds %d objects, want %d", len(objs), want)
	}
	for _, o := range objs {
		if !o.Token || !o.Private || !o.Sensitive || !o.AlwaysSensitive || o.Extractable || !o.NeverExtractable || !o.Local {
			t.Errorf("object %q: weak attributes %+v", o.Label, o)
		}
		if !o.Encrypt || !o.Decrypt || o.Wrap || o.Unwrap || o.Sign || o.Verify || o.Derive {
			t.Errorf("object %q: not single-purpose %+v", o.Label, o)
		}
		if len(o.ID) != 16 {
			t.Errorf("object %q: CKA_ID of %d bytes", o.Label, len(o.ID))
		}
	}
}

func TestRealKeysAreIsolated(t *testing.T) {
	ctx := context.Background()
	r := startReal(t)
	createAES(t, r.client, "a")
	createAES(t, r.client, "b")
	ea, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "a", Plaintext: []byte("for a")})
	if err != nil {
		t.Fatal(err)
	}
	eb, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "b", Plaintext: []byte("for b")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "b", Ciphertext: ea.GetCiphertext()})
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = r.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "a", Ciphertext: eb.GetCiphertext()})
	wantCode(t, err, connect.CodeInvalidArgument)
	// Splice b's key id into a's ciphertext: still refused (the HSM tag
	// covers the header).
	spliced := bytes.Clone(ea.GetCiphertext())
	copy(spliced[1:17], eb.GetCiphertext()[1:17])
	_, err = r.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "b", Ciphertext: spliced})
	wantCode(t, err, connect.CodeInvalidArgument)
}

// TestRealTamperedCiphertexts flips every byte, truncates to every length,
// extends, empties and changes the associated data of a real ciphertext;
// each attempt must fail with InvalidArgument and one identical message.
func TestRealTamperedCiphertexts(t *testing.T) {
	ctx := context.Background()
	r := startReal(t)
	createAES(t, r.client, "k")
	if _, err := r.client.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	enc, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("tamper me"), AssociatedData: []byte("ad")})
	if err != nil {
		t.Fatal(err)
	}
	ct := enc.GetCiphertext()
	cases := map[string][]byte{"empty": {}, "extended": append(bytes.Clone(ct), 0)}
	for i := range ct {
		c := bytes.Clone(ct)
		c[i] ^= 0x80
		cases[fmt.Sprintf("flip byte %d", i)] = c
		cases[fmt.Sprintf("truncate to %d", i)] = ct[:i]
	}
	c := bytes.Clone(ct)
	c[20] = 1 // the other live version
	cases["version 2 -> 1"] = c
	var first string
	try := func(name string, ct, ad []byte) {
		_, err := r.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: ct, AssociatedData: ad})
		msg := wantCode(t, err, connect.CodeInvalidArgument).Message()
		if first == "" {
			first = msg
		}
		if msg != first {
			t.Errorf("%s: message %q differs from %q", name, msg, first)
		}
	}
	for name, c := range cases {
		try(name, c, []byte("ad"))
	}
	for _, ad := range []string{"", "AD", "ad ", "ad\x00"} {
		try(fmt.Sprintf("associated data %q", ad), ct, []byte(ad))
	}
	if res, err := r.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: ct, AssociatedData: []byte("ad")}); err != nil || string(res.GetPlaintext()) != "tamper me" {
		t.Fatalf("untampered ciphertext: %v", err)
	}
	if want := "decryption failed"; first != want {
		t.Fatalf("message = %q, want %q", first, want)
	}
}

func TestRealOversizedPlaintextMakesNoHSMCall(t *testing.T) {
	ctx := context.Background()
	r := startReal(t)
	createAES(t, r.client, "k")
	_, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: make([]byte, 64<<10+1)})
	wantCode(t, err, connect.CodeResourceExhausted)
	_, err = r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: make([]byte, 3<<20)})
	wantCode(t, err, connect.CodeResourceExhausted)
	if n := r.hsm.Calls("Seal"); n != 0 {
		t.Fatalf("oversized plaintexts made %d Seal calls", n)
	}
	// The limit is exactly 64 KiB: that much is accepted.
	if _, err := r.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: make([]byte, 64<<10)}); err != nil {
		t.Fatal(err)
	}
	if n := r.hsm.Calls("Seal"); n != 1 {
		t.Fatalf("Seal calls = %d, want 1", n)
	}
}
