// Package hsmtest provides test doubles for hsm.Backend and a conformance
// suite that every implementation must pass.
package hsmtest

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"sync"

	"github.com/sigil-kms/sigil/hsm"
)

// Memory is an in-memory hsm.Backend for fast unit tests. Its ciphertexts
// and signatures have the same formats as a PKCS#11 token's (AES-256-GCM
// with the 16-byte tag appended; raw r||s ECDSA signatures). The zero value
// is ready to use. Close does nothing, so keys survive a simulated restart
// that reuses the same Memory.
type Memory struct {
	mu   sync.RWMutex
	keys map[string]*memKey // by key id; never exposed
}

// memKey is one key: an AES key's AEAD or a key pair's private key.
type memKey struct {
	typ    hsm.KeyType
	aead   cipher.AEAD   // for AES256
	signer crypto.Signer // for key pairs
}

var _ hsm.Backend = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{} }

// check validates what every method shares: the context and the identifier.
func check(ctx context.Context, id []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", hsm.ErrUnavailable, err)
	}
	if len(id) != hsm.IDSize {
		return fmt.Errorf("%w: key id is %d bytes, want %d", hsm.ErrInvalid, len(id), hsm.IDSize)
	}
	return nil
}

// GenerateKey creates a random AES-256 key or a key pair, and returns the
// key pair's public key.
func (m *Memory) GenerateKey(ctx context.Context, spec hsm.KeySpec) (crypto.PublicKey, error) {
	if err := check(ctx, spec.ID); err != nil {
		return nil, err
	}
	var (
		k   = &memKey{typ: spec.Type}
		pub crypto.PublicKey
		err error
	)
	switch {
	case spec.Type == hsm.AES256:
		k.aead, err = newAEAD()
	case spec.Type.Asymmetric():
		if m.exists(spec.ID) { // before the slow part
			return nil, fmt.Errorf("%w: id %x", hsm.ErrExists, spec.ID)
		}
		k.signer, err = newSigner(spec.Type)
		if err == nil {
			pub = k.signer.Public()
		}
	default:
		return nil, fmt.Errorf("%w: key type %v (%d)", hsm.ErrInvalid, spec.Type, int(spec.Type))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", hsm.ErrUnavailable, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[string(spec.ID)]; ok {
		return nil, fmt.Errorf("%w: id %x", hsm.ErrExists, spec.ID)
	}
	if m.keys == nil {
		m.keys = make(map[string]*memKey)
	}
	m.keys[string(spec.ID)] = k
	return pub, nil
}

// newAEAD returns AES-256-GCM under a random key.
func newAEAD() (cipher.AEAD, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// lookup returns the key with the identifier after validating ctx and id.
func (m *Memory) lookup(ctx context.Context, id []byte) (*memKey, error) {
	if err := check(ctx, id); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	k, ok := m.keys[string(id)]
	if !ok {
		return nil, fmt.Errorf("%w: id %x", hsm.ErrNotFound, id)
	}
	return k, nil
}

// aead returns the AES key's AEAD after validating ctx, id and nonce.
func (m *Memory) aead(ctx context.Context, id, nonce []byte) (cipher.AEAD, error) {
	if err := check(ctx, id); err != nil {
		return nil, err
	}
	if len(nonce) != hsm.NonceSize {
		return nil, fmt.Errorf("%w: nonce is %d bytes, want %d", hsm.ErrInvalid, len(nonce), hsm.NonceSize)
	}
	k, err := m.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	if k.aead == nil {
		return nil, fmt.Errorf("%w: key %x is a %v key, not AES", hsm.ErrInvalid, id, k.typ)
	}
	return k.aead, nil
}

// Seal encrypts plaintext with AES-256-GCM.
func (m *Memory) Seal(ctx context.Context, id, nonce, plaintext, aad []byte) ([]byte, error) {
	aead, err := m.aead(ctx, id, nonce)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, nonce, plaintext, aad), nil
}

// Open authenticates and decrypts ciphertext.
func (m *Memory) Open(ctx context.Context, id, nonce, ciphertext, aad []byte) ([]byte, error) {
	aead, err := m.aead(ctx, id, nonce)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nonce, ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", hsm.ErrDecrypt, err)
	}
	return pt, nil
}

// Destroy deletes the key.
func (m *Memory) Destroy(ctx context.Context, id []byte) error {
	if err := check(ctx, id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[string(id)]; !ok {
		return fmt.Errorf("%w: id %x", hsm.ErrNotFound, id)
	}
	delete(m.keys, string(id))
	return nil
}

// Exists reports whether the key exists.
func (m *Memory) Exists(ctx context.Context, id []byte) (bool, error) {
	if err := check(ctx, id); err != nil {
		return false, err
	}
	return m.exists(id), nil
}

func (m *Memory) exists(id []byte) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.keys[string(id)]
	return ok
}

// maxRandom is the largest n that Random accepts, as hsm.Backend documents.
const maxRandom = 1024

// Random returns n bytes from crypto/rand.
func (m *Memory) Random(ctx context.Context, n int) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", hsm.ErrUnavailable, err)
	}
	if n < 1 || n > maxRandom {
		return nil, fmt.Errorf("%w: %d random bytes requested, want 1..%d", hsm.ErrInvalid, n, maxRandom)
	}
	b := make([]byte, n)
	rand.Read(b) // never fails (Go 1.24+)
	return b, nil
}

// Ping returns nil unless ctx is done.
func (m *Memory) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", hsm.ErrUnavailable, err)
	}
	return nil
}

// Close does nothing; the keys stay.
func (m *Memory) Close() error { return nil }
