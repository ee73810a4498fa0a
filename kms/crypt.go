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
	return s.encrypt(ctx, k, plaintext, aad)
}

// encrypt encrypts under the primary version of k.
func (s *Service) encrypt(ctx context.Context, k keystore.Key, plaintext, aad []byte) ([]byte, uint32, error) {
	primary := s.Primary(k)
	if primary == 0 {
		return nil, 0, newError(ErrFailedPrecondition, "key has no enabled version")
	}
	v, err := s.store.GetVersion(ctx, k.ID, primary)
	if err != nil {
		return nil, 0, internal("get primary version", err)
	}
	if v.State != keystore.StateEnabled {
		return nil, 0, newError(ErrFailedPrecondition, "primary version is not enabled")
	}
	if err := s.takeEncryption(ctx, k, v); err != nil {
		return nil, 0, err
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
// with the same aad. Every failure of the ciphertext itself returns the same
// error, which matches ErrDecrypt; a version that is disabled or scheduled
// for destruction gives ErrFailedPrecondition, since it can be restored.
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
	return s.decrypt(ctx, k, ciphertext, aad)
}

// decrypt decrypts a ciphertext of k.
func (s *Service) decrypt(ctx context.Context, k keystore.Key, ciphertext, aad []byte) ([]byte, uint32, error) {
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
	switch v.State {
	case keystore.StateEnabled:
	case keystore.StateDisabled, keystore.StateDestroyScheduled:
		return nil, 0, newError(ErrFailedPrecondition, "key version is not enabled")
	default: // pending or destroyed
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
