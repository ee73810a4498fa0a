package kms

import (
	"context"
	"errors"
	"io"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/keystore"
)

// Encrypt encrypts plaintext under the primary version of the named key,
// binding aad, and returns the v1 ciphertext and the version used.
func (s *Service) Encrypt(ctx context.Context, name string, plaintext, aad []byte) ([]byte, uint32, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, 0, newError(ErrTooLarge, "plaintext exceeds %d bytes", MaxPlaintext)
	}
	if err := checkAssociatedData(aad); err != nil {
		return nil, 0, err
	}
	k, err := s.cryptoKey(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	if k.PrimaryVersion == 0 {
		return nil, 0, newError(ErrFailedPrecondition, "key has no enabled version")
	}
	v, err := s.store.GetVersion(ctx, k.ID, k.PrimaryVersion)
	if err != nil {
		return nil, 0, internal("get primary version", err)
	}
	if v.State != keystore.StateEnabled {
		return nil, 0, newError(ErrFailedPrecondition, "primary version is not enabled")
	}
	h := header{keyID: k.ID, version: v.Version}
	if _, err := io.ReadFull(s.rand, h.nonce[:]); err != nil {
		return nil, 0, internal("nonce", err)
	}
	hdr := h.marshal()
	sealed, err := s.hsm.Seal(ctx, v.HSMID, h.nonce[:], plaintext, associatedData(hdr, aad))
	if err != nil {
		return nil, 0, internal("seal", err)
	}
	return append(hdr, sealed...), v.Version, nil
}

// Decrypt decrypts a ciphertext that Encrypt produced under the named key
// with the same aad. Every failure to decrypt returns the same error, which
// matches ErrDecrypt.
func (s *Service) Decrypt(ctx context.Context, name string, ciphertext, aad []byte) ([]byte, uint32, error) {
	if len(ciphertext) > MaxCiphertext {
		return nil, 0, newError(ErrTooLarge, "ciphertext exceeds %d bytes", MaxCiphertext)
	}
	if err := checkAssociatedData(aad); err != nil {
		return nil, 0, err
	}
	k, err := s.cryptoKey(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	h, body, ok := parseCiphertext(ciphertext)
	if !ok || h.keyID != k.ID {
		return nil, 0, errDecrypt
	}
	v, err := s.store.GetVersion(ctx, k.ID, h.version)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, 0, errDecrypt
	}
	if err != nil {
		return nil, 0, internal("get version", err)
	}
	if v.State != keystore.StateEnabled {
		return nil, 0, errDecrypt
	}
	pt, err := s.hsm.Open(ctx, v.HSMID, h.nonce[:], body, associatedData(ciphertext[:headerSize], aad))
	if errors.Is(err, hsm.ErrDecrypt) {
		return nil, 0, errDecrypt
	}
	if err != nil {
		return nil, 0, internal("open", err)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, v.Version, nil
}

// cryptoKey returns the named key if it is an encryption key.
func (s *Service) cryptoKey(ctx context.Context, name string) (keystore.Key, error) {
	k, err := s.GetKey(ctx, name)
	if err != nil {
		return keystore.Key{}, err
	}
	if k.Purpose != keystore.PurposeEncryptDecrypt {
		return keystore.Key{}, newError(ErrFailedPrecondition, "key is not an encryption key")
	}
	return k, nil
}
