// Package hsmtest provides test doubles for hsm.Backend and a conformance
// suite that every implementation must pass.
package hsmtest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"sync"

	"github.com/sigil-kms/sigil/hsm"
)

// Memory is an in-memory hsm.Backend for fast unit tests. Its ciphertexts
// have the same format as a PKCS#11 token's (AES-256-GCM, 16-byte tag
// appended). The zero value is ready to use. Close does nothing, so keys
// survive a simulated restart that reuses the same Memory.
type Memory struct {
	mu   sync.RWMutex
	keys map[string]cipher.AEAD // by key id; never exposed
}

var _ hsm.Backend = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{} }

// check validates what every method shares: the context and the identifier.
func check(ctx context.Context, id []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: %w", err)
	}
	if len(id) != hsm.IDSize {
		return fmt.Errorf("%w: key id is %d bytes, want %d", hsm.ErrInvalid, len(id), hsm.IDSize)
	}
	return nil
}

// GenerateKey creates a random AES-256 key.
func (m *Memory) GenerateKey(ctx context.Context, spec hsm.KeySpec) error {
	if err := check(ctx, spec.ID); err != nil {
		return err
	}
	if spec.Type != hsm.AES256 {
		return fmt.Errorf("%w: key type %v", hsm.ErrInvalid, spec.Type)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("%w: %v", hsm.ErrUnavailable, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("%w: %v", hsm.ErrUnavailable, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return fmt.Errorf("%w: %v", hsm.ErrUnavailable, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[string(spec.ID)]; ok {
		return fmt.Errorf("%w: id %x", hsm.ErrExists, spec.ID)
	}
	if m.keys == nil {
		m.keys = make(map[string]cipher.AEAD)
	}
	m.keys[string(spec.ID)] = aead
	return nil
}

// key returns the key's AEAD after validating ctx, id and nonce.
func (m *Memory) key(ctx context.Context, id, nonce []byte) (cipher.AEAD, error) {
	if err := check(ctx, id); err != nil {
		return nil, err
	}
	if len(nonce) != hsm.NonceSize {
		return nil, fmt.Errorf("%w: nonce is %d bytes, want %d", hsm.ErrInvalid, len(nonce), hsm.NonceSize)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	aead, ok := m.keys[string(id)]
	if !ok {
		return nil, fmt.Errorf("%w: id %x", hsm.ErrNotFound, id)
	}
	return aead, nil
}

// Seal encrypts plaintext with AES-256-GCM.
func (m *Memory) Seal(ctx context.Context, id, nonce, plaintext, aad []byte) ([]byte, error) {
	aead, err := m.key(ctx, id, nonce)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, nonce, plaintext, aad), nil
}

// Open authenticates and decrypts ciphertext.
func (m *Memory) Open(ctx context.Context, id, nonce, ciphertext, aad []byte) ([]byte, error) {
	aead, err := m.key(ctx, id, nonce)
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
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.keys[string(id)]
	return ok, nil
}

// Ping returns nil unless ctx is done.
func (m *Memory) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: %w", err)
	}
	return nil
}

// Close does nothing; the keys stay.
func (m *Memory) Close() error { return nil }
