package kms

import (
	"context"
)

// DataKeySize is the size of the data keys GenerateDataKey makes.
const DataKeySize = 32

// DataKey is the result of GenerateDataKey.
type DataKey struct {
	// Plaintext is the data key, nil when the caller asked for none.
	Plaintext []byte
	// Ciphertext is the data key encrypted under the key, with the
	// caller's associated data; Decrypt returns Plaintext for it.
	Ciphertext []byte
	Version    uint32
}

// GenerateDataKey makes a 32-byte data key from the HSM's random generator
// and encrypts it under the primary version of the named key. With
// withoutPlaintext only the encrypted key is returned.
func (s *Service) GenerateDataKey(ctx context.Context, name string, aad []byte, withoutPlaintext bool) (DataKey, error) {
	if err := checkAssociatedData(aad); err != nil {
		return DataKey{}, err
	}
	k, err := s.cryptoKey(ctx, name)
	if err != nil {
		return DataKey{}, err
	}
	dk, err := s.hsm.Random(ctx, DataKeySize)
	if err != nil {
		return DataKey{}, internal("random", err)
	}
	ct, v, err := s.encrypt(ctx, k, dk, aad)
	if err != nil {
		return DataKey{}, err
	}
	if withoutPlaintext {
		clear(dk)
		dk = nil
	}
	return DataKey{Plaintext: dk, Ciphertext: ct, Version: v}, nil
}

// ReEncrypted is the result of ReEncrypt.
type ReEncrypted struct {
	Ciphertext    []byte
	Version       uint32
	SourceVersion uint32
}

// ReEncrypt decrypts a ciphertext of the named key and encrypts the
// plaintext, with the same associated data, under the primary version of
// destination (the same key when empty). The plaintext never leaves the
// process and is cleared after use.
func (s *Service) ReEncrypt(ctx context.Context, name string, ciphertext, aad []byte, destination string) (ReEncrypted, error) {
	if destination == "" {
		destination = name
	}
	if len(ciphertext) > MaxCiphertext {
		return ReEncrypted{}, newError(ErrTooLarge, "ciphertext exceeds %d bytes", MaxCiphertext)
	}
	if err := checkAssociatedData(aad); err != nil {
		return ReEncrypted{}, err
	}
	src, err := s.cryptoKey(ctx, name)
	if err != nil {
		return ReEncrypted{}, err
	}
	dst := src
	if destination != name {
		if dst, err = s.cryptoKey(ctx, destination); err != nil {
			return ReEncrypted{}, err
		}
	}
	pt, from, err := s.decrypt(ctx, src, ciphertext, aad)
	if err != nil {
		return ReEncrypted{}, err
	}
	defer clear(pt)
	ct, to, err := s.encrypt(ctx, dst, pt, aad)
	if err != nil {
		return ReEncrypted{}, err
	}
	return ReEncrypted{Ciphertext: ct, Version: to, SourceVersion: from}, nil
}
