package kms

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"testing"

	"github.com/google/uuid"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
)

// fuzzHSM is the HSM of the fuzz targets: hsmtest.Memory, except that it
// makes no RSA key pairs, which take far too long to generate inside a
// fuzz loop. For an RSA spec, GenerateKey returns the public key of a
// stand-in ECDSA key and keeps no private key, so such a version cannot
// sign; the targets only create RSA keys, never use them.
type fuzzHSM struct {
	*hsmtest.Memory
	standIn crypto.PublicKey
}

func newFuzzHSM(tb testing.TB) *fuzzHSM {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return &fuzzHSM{Memory: hsmtest.NewMemory(), standIn: k.Public()}
}

func (b *fuzzHSM) GenerateKey(ctx context.Context, spec hsm.KeySpec) (crypto.PublicKey, error) {
	switch spec.Type {
	case hsm.RSA2048, hsm.RSA3072, hsm.RSA4096:
		return b.standIn, nil
	}
	return b.Memory.GenerateKey(ctx, spec)
}

// newFuzzService returns a Service over a counting fuzzHSM and an empty
// in-memory store.
func newFuzzService(tb testing.TB) (*Service, *hsmtest.Faulty) {
	tb.Helper()
	b := hsmtest.NewFaulty(newFuzzHSM(tb))
	return New(b, keystoretest.NewMemory()), b
}

// mustCreate creates a key with default settings or fails tb.
func mustCreate(tb testing.TB, svc *Service, name string, alg keystore.Algorithm) keystore.Key {
	tb.Helper()
	k, err := svc.CreateKey(context.Background(), CreateKeyRequest{Name: name, Algorithm: alg})
	if err != nil {
		tb.Fatalf("CreateKey(%s, %s): %v", name, alg, err)
	}
	return k
}

// namePattern is the documented key-name rule, as an oracle independent
// of ValidName.
var namePattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,63}$`)

// checkKind fails t unless err is a caller-safe *Error whose kind is one
// of kinds. An internal error, or a sentinel not in kinds, is a failure.
func checkKind(t *testing.T, what string, err error, kinds ...error) {
	t.Helper()
	var kerr *Error
	if !errors.As(err, &kerr) {
		t.Fatalf("%s: err = %v (%T), want a *kms.Error of kind %v", what, err, err, kinds)
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			return
		}
	}
	t.Fatalf("%s: err = %v (kind %v), want kind %v", what, err, kerr.Kind, kinds)
}

// goldenCase is one key of the golden service, with the golden vector it
// decrypts.
type goldenCase struct {
	name       string
	version    uint32
	ciphertext []byte
	plaintext  []byte
	aad        []byte
}

// newGoldenService returns a Service whose HSM seals with goldenKey and
// whose store holds the keys of the first two golden vectors (with all
// their versions, enabled), and those vectors. The third vector, version
// 2^32-1, cannot be stored in a fuzz setup; it only seeds the parser.
func newGoldenService(tb testing.TB) (*Service, []goldenCase) {
	tb.Helper()
	ctx := context.Background()
	block, err := aes.NewCipher(goldenKey)
	if err != nil {
		tb.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		tb.Fatal(err)
	}
	store := keystoretest.NewMemory()
	svc := New(&fixedHSM{aead: aead}, store)
	var out []goldenCase
	for i, g := range goldenV1[:2] {
		gc := goldenCase{
			name: "golden" + string(rune('0'+i)), version: g.version,
			ciphertext: mustHex(g.want), plaintext: mustHex(g.plaintext), aad: mustHex(g.aad),
		}
		k := keystore.Key{ID: uuid.MustParse(g.keyID), Name: gc.name, Purpose: keystore.PurposeEncryptDecrypt,
			Algorithm: keystore.AES256GCM, DestroyDelay: DefaultDestroyDelay, PublishLead: DefaultPublishLead}
		hsmID := func(v uint32) []byte { return fmt.Appendf(nil, "%s-v%d", gc.name, v) }
		// Make versions 1 to g.version, each primary in turn.
		_, v, err := store.CreateKey(ctx, k, hsmID(1))
		for err == nil {
			if _, _, err = store.CommitVersion(ctx, k.ID, v.Version, nil, true); err != nil || v.Version == g.version {
				break
			}
			v, err = store.AddVersion(ctx, k.ID, hsmID(v.Version+1))
		}
		if err != nil {
			tb.Fatalf("golden key %s: %v", gc.name, err)
		}
		out = append(out, gc)
	}
	return svc, out
}
