package kms

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
)

type fixture struct {
	svc   *Service
	hsm   *hsmtest.Faulty
	store *keystoretest.Memory
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	b := hsmtest.NewFaulty(hsmtest.NewMemory())
	s := keystoretest.NewMemory()
	return fixture{svc: New(b, s), hsm: b, store: s}
}

func (f fixture) createKey(t *testing.T, name string) keystore.Key {
	t.Helper()
	k, err := f.svc.CreateKey(context.Background(), CreateKeyRequest{Name: name, Algorithm: keystore.AES256GCM})
	if err != nil {
		t.Fatalf("CreateKey(%q): %v", name, err)
	}
	return k
}

func TestCreateKey(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	k, err := f.svc.CreateKey(ctx, CreateKeyRequest{Name: "k1", Algorithm: keystore.AES256GCM, Labels: map[string]string{"team": "data"}})
	if err != nil {
		t.Fatal(err)
	}
	if k.PrimaryVersion != 1 || k.Purpose != keystore.PurposeEncryptDecrypt || k.Labels["team"] != "data" {
		t.Fatalf("key = %+v", k)
	}
	got, err := f.svc.GetKey(ctx, "k1")
	if err != nil || got.ID != k.ID || got.PrimaryVersion != 1 {
		t.Fatalf("GetKey = %+v, %v", got, err)
	}
	_, err = f.svc.CreateKey(ctx, CreateKeyRequest{Name: "k1", Algorithm: keystore.AES256GCM})
	if !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("duplicate CreateKey = %v, want ErrAlreadyExists", err)
	}
}

func TestCreateKeyRejects(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	long := strings.Repeat("a", 64)
	tests := []struct {
		name string
		req  CreateKeyRequest
		want error
	}{
		{"empty name", CreateKeyRequest{Algorithm: keystore.AES256GCM}, ErrInvalidArgument},
		{"64 chars", CreateKeyRequest{Name: long, Algorithm: keystore.AES256GCM}, ErrInvalidArgument},
		{"path", CreateKeyRequest{Name: "../x", Algorithm: keystore.AES256GCM}, ErrInvalidArgument},
		{"sql", CreateKeyRequest{Name: "' OR 1=1--", Algorithm: keystore.AES256GCM}, ErrInvalidArgument},
		{"cyrillic e", CreateKeyRequest{Name: "k\u0435y", Algorithm: keystore.AES256GCM}, ErrInvalidArgument},
		{"nul", CreateKeyRequest{Name: "a\x00b", Algorithm: keystore.AES256GCM}, ErrInvalidArgument},
		{"no algorithm", CreateKeyRequest{Name: "a"}, ErrInvalidArgument},
		{"unknown algorithm", CreateKeyRequest{Name: "a", Algorithm: "ROT13"}, ErrInvalidArgument},
		{"bad label key", CreateKeyRequest{Name: "a", Algorithm: keystore.AES256GCM, Labels: map[string]string{"a b": "c"}}, ErrInvalidArgument},
		{"long label value", CreateKeyRequest{Name: "a", Algorithm: keystore.AES256GCM, Labels: map[string]string{"a": long + long + long + long + long}}, ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.CreateKey(ctx, tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if n := f.hsm.Calls("GenerateKey"); n != 0 {
		t.Fatalf("rejected requests made %d HSM calls", n)
	}
}

func TestCreateKeyHSMFailureLeavesNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.hsm.Fail(fmt.Errorf("%w: CKR_DEVICE_ERROR", hsm.ErrUnavailable))
	_, err := f.svc.CreateKey(ctx, CreateKeyRequest{Name: "k", Algorithm: keystore.AES256GCM})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if _, err := f.svc.GetKey(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetKey after failed create = %v, want ErrNotFound", err)
	}
	f.hsm.Recover()
	f.createKey(t, "k")
}

// madeThenFailed is a backend whose GenerateKey makes the key and then
// reports a failure, as a module that fails after creating the object
// does; it remembers the ID.
type madeThenFailed struct {
	hsm.Backend
	id []byte
}

func (m *madeThenFailed) GenerateKey(ctx context.Context, spec hsm.KeySpec) (crypto.PublicKey, error) {
	m.id = spec.ID
	if _, err := m.Backend.GenerateKey(ctx, spec); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: CKR_DEVICE_ERROR after the object was made", hsm.ErrUnavailable)
}

// TestCreateKeyHSMFailureDestroysObject checks that an object the HSM made
// before failing is destroyed, not left without a row.
func TestCreateKeyHSMFailureDestroysObject(t *testing.T) {
	ctx := context.Background()
	mem := hsmtest.NewMemory()
	b := &madeThenFailed{Backend: mem}
	svc := New(b, keystoretest.NewMemory())
	if _, err := svc.CreateKey(ctx, CreateKeyRequest{Name: "k", Algorithm: keystore.AES256GCM}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("CreateKey = %v, want ErrUnavailable", err)
	}
	if ok, err := mem.Exists(ctx, b.id); err != nil || ok {
		t.Fatalf("the object made before the failure: Exists = %v, %v; want it destroyed", ok, err)
	}
}

func TestEncryptDecrypt(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.createKey(t, "k")
	for _, size := range []int{0, 1, 1000, MaxPlaintext} {
		pt := bytes.Repeat([]byte{0x5a}, size)
		ct, v, err := f.svc.Encrypt(ctx, "k", pt, []byte("ctx"))
		if err != nil || v != 1 {
			t.Fatalf("Encrypt(%d) = %d, %v", size, v, err)
		}
		if len(ct) != minCiphertext+size {
			t.Fatalf("len(ct) = %d, want %d", len(ct), minCiphertext+size)
		}
		got, v, err := f.svc.Decrypt(ctx, "k", ct, []byte("ctx"))
		if err != nil || v != 1 || !bytes.Equal(got, pt) {
			t.Fatalf("Decrypt(%d) = %d, %v", size, v, err)
		}
	}
}

func TestEncryptLimitsBeforeHSM(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.createKey(t, "k")
	before := f.hsm.Calls("Seal")
	if _, _, err := f.svc.Encrypt(ctx, "k", make([]byte, MaxPlaintext+1), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized plaintext: %v", err)
	}
	if _, _, err := f.svc.Encrypt(ctx, "k", nil, make([]byte, MaxAssociatedData+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized aad: %v", err)
	}
	if _, _, err := f.svc.Decrypt(ctx, "k", make([]byte, MaxCiphertext+1), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized ciphertext: %v", err)
	}
	if n := f.hsm.Calls("Seal") - before; n != 0 {
		t.Fatalf("oversized requests made %d Seal calls", n)
	}
}

func TestDecryptFailuresAreUniform(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.createKey(t, "a")
	f.createKey(t, "b")
	ct, _, err := f.svc.Encrypt(ctx, "a", []byte("secret"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	otherCT, _, _ := f.svc.Encrypt(ctx, "b", []byte("secret"), []byte("aad"))
	if _, err := f.svc.RotateKey(ctx, "a", false); err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{"empty": nil, "other key": otherCT, "extended": append(bytes.Clone(ct), 0)}
	for i := range ct {
		c := bytes.Clone(ct)
		c[i] ^= 0x01
		bad[fmt.Sprintf("flip %d", i)] = c
		bad[fmt.Sprintf("truncate %d", i)] = ct[:i]
	}
	// Edit the version to the other live version: the header is bound.
	c := bytes.Clone(ct)
	c[20] = 2
	bad["version 2"] = c
	for name, c := range bad {
		_, _, err := f.svc.Decrypt(ctx, "a", c, []byte("aad"))
		if err != errDecrypt {
			t.Errorf("%s: err = %v, want the decryption error", name, err)
		}
	}
	for name, aad := range map[string][]byte{"none": nil, "other": []byte("aae"), "longer": []byte("aad\x00")} {
		if _, _, err := f.svc.Decrypt(ctx, "a", ct, aad); err != errDecrypt {
			t.Errorf("aad %s: err = %v", name, err)
		}
	}
	if _, _, err := f.svc.Decrypt(ctx, "b", ct, []byte("aad")); err != errDecrypt {
		t.Errorf("key b: err = %v", err)
	}
}

func TestRotation(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.createKey(t, "k")
	var cts [][]byte
	for i := 1; i <= 20; i++ {
		ct, v, err := f.svc.Encrypt(ctx, "k", []byte{byte(i)}, nil)
		if err != nil || v != uint32(i) {
			t.Fatalf("Encrypt #%d = v%d, %v", i, v, err)
		}
		cts = append(cts, ct)
		nv, err := f.svc.RotateKey(ctx, "k", false)
		if err != nil || nv.Version != uint32(i+1) || nv.State != keystore.StateEnabled {
			t.Fatalf("Rotate #%d = %+v, %v", i, nv, err)
		}
	}
	for i, ct := range cts {
		pt, v, err := f.svc.Decrypt(ctx, "k", ct, nil)
		if err != nil || v != uint32(i+1) || pt[0] != byte(i+1) {
			t.Fatalf("Decrypt v%d = %x, v%d, %v", i+1, pt, v, err)
		}
	}
	vs, next, err := f.svc.ListKeyVersions(ctx, "k", 8, "")
	if err != nil || len(vs) != 8 || next == "" || vs[0].Version != 1 {
		t.Fatalf("ListKeyVersions page 1 = %d versions, %q, %v", len(vs), next, err)
	}
	var all []keystore.Version
	all = append(all, vs...)
	for next != "" {
		vs, next, err = f.svc.ListKeyVersions(ctx, "k", 8, next)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, vs...)
	}
	if len(all) != 21 {
		t.Fatalf("listed %d versions, want 21", len(all))
	}
	for i, v := range all {
		if v.Version != uint32(i+1) {
			t.Fatalf("version[%d] = %d", i, v.Version)
		}
	}
}

func TestRotateFailureKeepsPrimary(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.createKey(t, "k")
	f.hsm.Fail(fmt.Errorf("%w: CKR_DEVICE_REMOVED", hsm.ErrUnavailable))
	if _, err := f.svc.RotateKey(ctx, "k", false); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("RotateKey = %v, want ErrUnavailable", err)
	}
	f.hsm.Recover()
	k, _ := f.svc.GetKey(ctx, "k")
	if k.PrimaryVersion != 1 {
		t.Fatalf("primary = %d after failed rotation", k.PrimaryVersion)
	}
	vs, _, _ := f.svc.ListKeyVersions(ctx, "k", 0, "")
	if len(vs) != 1 {
		t.Fatalf("versions after failed rotation = %+v", vs)
	}
	v, err := f.svc.RotateKey(ctx, "k", false)
	if err != nil || v.Version != 3 {
		t.Fatalf("next rotation = %+v, %v; want version 3 (2 is never reused)", v, err)
	}
}

func TestListKeysPaging(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	for i := 0; i < 25; i++ {
		f.createKey(t, fmt.Sprintf("key-%02d", i))
	}
	var names []string
	tok := ""
	for {
		keys, next, err := f.svc.ListKeys(ctx, 10, tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			names = append(names, k.Name)
		}
		if next == "" {
			break
		}
		tok = next
	}
	if len(names) != 25 || names[0] != "key-00" || names[24] != "key-24" {
		t.Fatalf("listed %v", names)
	}
	if _, _, err := f.svc.ListKeys(ctx, 10, "!!", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad token: %v", err)
	}
	if _, _, err := f.svc.ListKeys(ctx, -1, "", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("negative page size: %v", err)
	}
}

func TestUnknownKey(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.svc.GetKey(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, _, err := f.svc.Encrypt(ctx, "nope", nil, nil); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, _, err := f.svc.Decrypt(ctx, "nope", nil, nil); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := f.svc.RotateKey(ctx, "nope", false); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, _, err := f.svc.ListKeyVersions(ctx, "nope", 0, ""); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.createKey(t, "k")
	ct, _, _ := f.svc.Encrypt(ctx, "k", []byte("x"), nil)
	f.hsm.Fail(fmt.Errorf("%w: CKR_TOKEN_NOT_PRESENT", hsm.ErrUnavailable))
	if _, _, err := f.svc.Encrypt(ctx, "k", []byte("x"), nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Encrypt with HSM down = %v", err)
	}
	if _, _, err := f.svc.Decrypt(ctx, "k", ct, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Decrypt with HSM down = %v (must not look like a bad ciphertext)", err)
	}
	if err := f.svc.Ready(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ready with HSM down = %v", err)
	}
	f.hsm.Recover()
	f.store.Fail(fmt.Errorf("%w: connection refused", keystore.ErrUnavailable))
	if _, _, err := f.svc.Encrypt(ctx, "k", []byte("x"), nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Encrypt with database down = %v", err)
	}
	if err := f.svc.Ready(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ready with database down = %v", err)
	}
	f.store.Recover()
	if err := f.svc.Ready(ctx); err != nil {
		t.Fatalf("Ready = %v", err)
	}
}

// cancelAfterGenerate cancels the caller's context as soon as the HSM has
// made a key, like a client whose deadline ends mid-request.
type cancelAfterGenerate struct {
	hsm.Backend
	cancel context.CancelFunc
}

func (c cancelAfterGenerate) GenerateKey(ctx context.Context, spec hsm.KeySpec) (crypto.PublicKey, error) {
	pub, err := c.Backend.GenerateKey(ctx, spec)
	c.cancel()
	return pub, err
}

func TestCreateKeySurvivesCallerCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := keystoretest.NewMemory()
	svc := New(cancelAfterGenerate{hsmtest.NewMemory(), cancel}, store)
	if _, err := svc.CreateKey(ctx, CreateKeyRequest{Name: "k", Algorithm: keystore.AES256GCM}); err != nil {
		t.Fatalf("CreateKey = %v", err)
	}
	k, err := svc.GetKey(context.Background(), "k")
	if err != nil || k.PrimaryVersion != 1 {
		t.Fatalf("after a cancelled CreateKey: %+v, %v; want primary 1", k, err)
	}
}

func TestNoncesDiffer(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.createKey(t, "k")
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		ct, _, err := f.svc.Encrypt(ctx, "k", []byte("same"), []byte("same"))
		if err != nil {
			t.Fatal(err)
		}
		nonce := string(ct[21:33])
		if seen[nonce] {
			t.Fatalf("nonce repeated after %d encryptions", i)
		}
		seen[nonce] = true
	}
}
