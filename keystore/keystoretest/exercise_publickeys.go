package keystoretest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"slices"
	"testing"

	"github.com/sigil-kms/sigil/keystore"
)

// publicKeyDER returns the DER SubjectPublicKeyInfo of a new key of alg,
// which must be one of the EC or Ed25519 algorithms.
func publicKeyDER(t *testing.T, alg keystore.Algorithm) []byte {
	t.Helper()
	var (
		pub any
		err error
	)
	switch alg {
	case keystore.ECP256SHA256, keystore.ECP384SHA384:
		curve := elliptic.P256()
		if alg == keystore.ECP384SHA384 {
			curve = elliptic.P384()
		}
		var priv *ecdsa.PrivateKey
		priv, err = ecdsa.GenerateKey(curve, rand.Reader)
		if err == nil {
			pub = priv.Public()
		}
	case keystore.Ed25519:
		pub, _, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("publicKeyDER: unsupported algorithm %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// mustCreateSigning creates a signing key of alg named name with a pending
// version 1.
func mustCreateSigning(t *testing.T, s keystore.Store, name string, alg keystore.Algorithm) keystore.Key {
	t.Helper()
	k, _, err := s.CreateKey(testContext(t), keystore.Key{Name: name, Purpose: keystore.PurposeSignVerify, Algorithm: alg}, newHSMID(t))
	if err != nil {
		t.Fatalf("CreateKey(%q): %v", name, err)
	}
	return k
}

// mustCommitPublicKey commits a version with a public key.
func mustCommitPublicKey(t *testing.T, s keystore.Store, keyID [16]byte, version uint32, der []byte, primary bool) keystore.Version {
	t.Helper()
	_, v, err := s.CommitVersion(testContext(t), keyID, version, der, primary)
	if err != nil {
		t.Fatalf("CommitVersion(%d, public key, primary=%t): %v", version, primary, err)
	}
	return v
}

// mustListPublicKeys returns ListPublicKeys(keyName).
func mustListPublicKeys(t *testing.T, s keystore.Store, keyName string) []keystore.PublicKey {
	t.Helper()
	pks, err := s.ListPublicKeys(testContext(t), keyName)
	if err != nil {
		t.Fatalf("ListPublicKeys(%q): %v", keyName, err)
	}
	return pks
}

// samePublicKey reports how a and b differ, or "" if they do not.
func samePublicKey(a, b keystore.PublicKey) string {
	switch {
	case a.KeyID != b.KeyID:
		return fmt.Sprintf("key ID %x != %x", a.KeyID, b.KeyID)
	case a.KeyName != b.KeyName || a.Algorithm != b.Algorithm || a.Version != b.Version:
		return fmt.Sprintf("%q %s version %d != %q %s version %d", a.KeyName, a.Algorithm, a.Version, b.KeyName, b.Algorithm, b.Version)
	case !bytes.Equal(a.DER, b.DER):
		return fmt.Sprintf("DER %x != %x", a.DER, b.DER)
	case !a.CreateTime.Equal(b.CreateTime):
		return fmt.Sprintf("create time %v != %v", a.CreateTime, b.CreateTime)
	}
	return ""
}

// samePublicKeys reports how the lists got and want differ, or "" if they
// do not.
func samePublicKeys(got, want []keystore.PublicKey) string {
	if len(got) != len(want) {
		var names []string
		for _, pk := range got {
			names = append(names, fmt.Sprintf("%s/%d", pk.KeyName, pk.Version))
		}
		return fmt.Sprintf("%d public keys %v, want %d", len(got), names, len(want))
	}
	for i := range got {
		if d := samePublicKey(got[i], want[i]); d != "" {
			return fmt.Sprintf("public key %d: %s", i, d)
		}
	}
	return ""
}

func testPublicKeyRoundTrip(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k := mustCreateSigning(t, s, "signer", keystore.ECP256SHA256)
	v2 := mustAdd(t, s, k.ID)
	if v1, err := s.GetVersion(ctx, k.ID, 1); err != nil || v1.PublicKey != nil || v2.PublicKey != nil {
		t.Errorf("pending versions' public keys %x (%v), %x; want nil", v1.PublicKey, err, v2.PublicKey)
	}

	// A real SubjectPublicKeyInfo, and a large blob with every byte value:
	// the store keeps bytes and parses nothing.
	ders := [][]byte{publicKeyDER(t, keystore.ECP256SHA256), make([]byte, 2048)}
	for i := range ders[1] {
		ders[1][i] = byte(i * 7)
	}
	for i, der := range ders {
		in := slices.Clone(der)
		v := mustCommitPublicKey(t, s, k.ID, uint32(i+1), in, i == 0)
		in[0] ^= 0xff // the store kept its own copy
		if !bytes.Equal(v.PublicKey, der) {
			t.Errorf("CommitVersion(%d) returned public key %x, want %x", i+1, v.PublicKey, der)
		}
		v.PublicKey[1] ^= 0xff // the caller's copy is its own
	}
	listed := mustListVersions(t, s, k.ID)
	if len(listed) != len(ders) {
		t.Fatalf("ListVersions returned %d versions, want %d", len(listed), len(ders))
	}
	for i, der := range ders {
		v, err := s.GetVersion(ctx, k.ID, uint32(i+1))
		if err != nil {
			t.Fatalf("GetVersion(%d): %v", i+1, err)
		}
		if !bytes.Equal(v.PublicKey, der) {
			t.Errorf("GetVersion(%d) public key %x, want %x", i+1, v.PublicKey, der)
		}
		if !bytes.Equal(listed[i].PublicKey, der) {
			t.Errorf("ListVersions version %d public key %x, want %x", i+1, listed[i].PublicKey, der)
		}
		v.PublicKey[0] ^= 0xff
		listed[i].PublicKey[0] ^= 0xff
	}
	if v, err := s.GetVersion(ctx, k.ID, 1); err != nil || !bytes.Equal(v.PublicKey, ders[0]) {
		t.Errorf("GetVersion(1) after changing returned copies = %x, %v; want %x", v.PublicKey, err, ders[0])
	}
}

func testNilPublicKey(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	k, _ := mustCreate(t, s, "symmetric")
	mustAdd(t, s, k.ID)
	_, v1 := mustCommit(t, s, k.ID, 1, true)
	_, v2, err := s.CommitVersion(ctx, k.ID, 2, []byte{}, true)
	if err != nil {
		t.Fatalf("CommitVersion with an empty public key: %v", err)
	}
	for _, v := range []keystore.Version{v1, v2} {
		if v.PublicKey != nil {
			t.Errorf("CommitVersion(%d) returned public key %#v, want nil", v.Version, v.PublicKey)
		}
	}
	for _, v := range mustListVersions(t, s, k.ID) {
		if v.PublicKey != nil {
			t.Errorf("ListVersions: version %d has public key %#v, want nil", v.Version, v.PublicKey)
		}
	}
	if v, err := s.GetVersion(ctx, k.ID, 1); err != nil || v.PublicKey != nil {
		t.Errorf("GetVersion(1) = public key %#v, %v; want nil", v.PublicKey, err)
	}

	// A refused commit records nothing.
	_, _, err = s.CommitVersion(ctx, k.ID, 1, publicKeyDER(t, keystore.Ed25519), false)
	wantErr(t, "CommitVersion of an enabled version", err, keystore.ErrConflict)
	if v, err := s.GetVersion(ctx, k.ID, 1); err != nil || v.PublicKey != nil {
		t.Errorf("GetVersion(1) after a refused commit = public key %x, %v; want nil", v.PublicKey, err)
	}
}

func testListPublicKeys(t *testing.T, s keystore.Store) {
	ctx := testContext(t)
	var want []keystore.PublicKey
	// expect records that ListPublicKeys must return version v of k.
	expect := func(k keystore.Key, v keystore.Version) keystore.PublicKey {
		pk := keystore.PublicKey{KeyID: k.ID, KeyName: k.Name, Algorithm: k.Algorithm, Version: v.Version, DER: v.PublicKey, CreateTime: v.CreateTime}
		want = append(want, pk)
		return pk
	}

	// Bytewise, "sig-B" sorts before "sig-a" and "sig-b"; keys are
	// created out of order.
	b := mustCreateSigning(t, s, "sig-b", keystore.ECP256SHA256)
	mustAdd(t, s, b.ID) // 2 stays pending
	mustAdd(t, s, b.ID)
	b3 := mustCommitPublicKey(t, s, b.ID, 3, publicKeyDER(t, b.Algorithm), true)
	b1 := mustCommitPublicKey(t, s, b.ID, 1, publicKeyDER(t, b.Algorithm), false)

	a := mustCreateSigning(t, s, "sig-a", keystore.ECP384SHA384)
	mustCommit(t, s, a.ID, 1, true) // no public key (an older release)
	mustAdd(t, s, a.ID)
	a2 := mustCommitPublicKey(t, s, a.ID, 2, publicKeyDER(t, a.Algorithm), true)

	upper := mustCreateSigning(t, s, "sig-B", keystore.Ed25519)
	upper1 := mustCommitPublicKey(t, s, upper.ID, 1, publicKeyDER(t, upper.Algorithm), true)

	mustCreateSigning(t, s, "sig-pending", keystore.Ed25519)
	mustCreateEnabled(t, s, "aes")
	// Only signing keys are published, whatever their versions hold.
	enc, _, err := s.CreateKey(ctx, keystore.Key{Name: "enc-with-pk", Purpose: keystore.PurposeEncryptDecrypt, Algorithm: "RSA_DECRYPT_OAEP_2048_SHA256"}, newHSMID(t))
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	mustCommitPublicKey(t, s, enc.ID, 1, publicKeyDER(t, keystore.ECP256SHA256), true)

	expect(upper, upper1)
	expect(a, a2)
	wantB := []keystore.PublicKey{expect(b, b1), expect(b, b3)}

	all := mustListPublicKeys(t, s, "")
	if d := samePublicKeys(all, want); d != "" {
		t.Errorf("ListPublicKeys(\"\"): %s", d)
	}
	if d := samePublicKeys(mustListPublicKeys(t, s, "sig-b"), wantB); d != "" {
		t.Errorf("ListPublicKeys(sig-b): %s", d)
	}
	if d := samePublicKeys(mustListPublicKeys(t, s, "sig-B"), want[:1]); d != "" {
		t.Errorf("ListPublicKeys(sig-B): %s", d)
	}
	for _, name := range []string{"sig-pending", "aes", "enc-with-pk", "unknown", "SIG-B", "sig-"} {
		if pks := mustListPublicKeys(t, s, name); len(pks) != 0 {
			t.Errorf("ListPublicKeys(%q) = %d public keys, want none", name, len(pks))
		}
	}

	// The returned bytes are the caller's own.
	for _, pk := range all {
		pk.DER[0] ^= 0xff
	}
	if d := samePublicKeys(mustListPublicKeys(t, s, ""), want); d != "" {
		t.Errorf("ListPublicKeys after changing returned copies: %s", d)
	}
	if v, err := s.GetVersion(ctx, b.ID, 3); err != nil || !bytes.Equal(v.PublicKey, b3.PublicKey) {
		t.Errorf("GetVersion(3) after changing returned copies = %x, %v; want %x", v.PublicKey, err, b3.PublicKey)
	}
}

func testListPublicKeysEmpty(t *testing.T, s keystore.Store) {
	for _, name := range []string{"", "none"} {
		if pks := mustListPublicKeys(t, s, name); len(pks) != 0 {
			t.Errorf("ListPublicKeys(%q) on an empty store = %d public keys, want none", name, len(pks))
		}
	}
}
