package pkcs11

import (
	"context"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// gcm returns the CKM_AES_GCM mechanism for nonce and aad. The caller must
// free params after the operation.
func gcm(nonce, aad []byte) (mech []*p11.Mechanism, params *p11.GCMParams) {
	params = p11.NewGCMParams(nonce, aad, hsm.TagSize*8)
	return []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, params
}

// checkNonce rejects nonces of the wrong length.
func checkNonce(nonce []byte) error {
	if len(nonce) != hsm.NonceSize {
		return fmt.Errorf("%w: nonce is %d bytes, want %d", hsm.ErrInvalid, len(nonce), hsm.NonceSize)
	}
	return nil
}

// checkAES refuses a key other than an AES secret key: a signing key must
// never encrypt or decrypt.
func checkAES(id []byte, k key) error {
	if k.class != p11.CKO_SECRET_KEY || k.typ != p11.CKK_AES {
		return fmt.Errorf("%w: key %x is not an AES key", hsm.ErrInvalid, id)
	}
	return nil
}

// Seal encrypts plaintext with AES-256-GCM (C_EncryptInit, C_Encrypt) and
// returns the ciphertext followed by the tag.
func (b *Backend) Seal(ctx context.Context, id, nonce, plaintext, aad []byte) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if err := checkNonce(nonce); err != nil {
		return nil, err
	}
	var out []byte
	err := b.withKey(ctx, id, func(s p11.SessionHandle, k key) error {
		if err := checkAES(id, k); err != nil {
			return err
		}
		mech, params := gcm(nonce, aad)
		defer params.Free()
		if err := b.mod.ctx.EncryptInit(s, mech, k.h); err != nil {
			return fmt.Errorf("C_EncryptInit: %w", err)
		}
		ct, err := b.mod.ctx.Encrypt(s, plaintext)
		if err != nil {
			// The operation should have ended, but a session in doubt is
			// not worth keeping.
			return dirtyError{fmt.Errorf("C_Encrypt: %w", err)}
		}
		if len(ct) != len(plaintext)+hsm.TagSize {
			return fmt.Errorf("%w: C_Encrypt returned %d bytes for %d", hsm.ErrUnavailable, len(ct), len(plaintext))
		}
		out = ct
		return nil
	})
	if misuse(err) {
		return nil, fmt.Errorf("%w: %v", hsm.ErrInvalid, err)
	}
	if err != nil {
		return nil, classify(err, hsm.ErrUnavailable)
	}
	return out, nil
}

// Open authenticates and decrypts ciphertext (C_DecryptInit, C_Decrypt).
//
// SoftHSM 2.6 reports a failed tag check (wrong key, nonce, associated data
// or ciphertext) as CKR_GENERAL_ERROR and ends the operation cleanly; other
// modules use CKR_ENCRYPTED_DATA_INVALID. Every failure that is not about
// availability is reported as hsm.ErrDecrypt.
func (b *Backend) Open(ctx context.Context, id, nonce, ciphertext, aad []byte) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if err := checkNonce(nonce); err != nil {
		return nil, err
	}
	if len(ciphertext) < hsm.TagSize {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is shorter than the tag", hsm.ErrDecrypt, len(ciphertext))
	}
	var out []byte
	err := b.withKey(ctx, id, func(s p11.SessionHandle, k key) error {
		if err := checkAES(id, k); err != nil {
			return err
		}
		mech, params := gcm(nonce, aad)
		defer params.Free()
		if err := b.mod.ctx.DecryptInit(s, mech, k.h); err != nil {
			return fmt.Errorf("C_DecryptInit: %w", err)
		}
		pt, err := b.mod.ctx.Decrypt(s, ciphertext)
		if err != nil {
			err = fmt.Errorf("C_Decrypt: %w", err)
			if authFailure(err) {
				return err
			}
			return dirtyError{err}
		}
		out = pt
		return nil
	})
	if misuse(err) && !isRV(err, p11.CKR_DATA_LEN_RANGE) && !isRV(err, p11.CKR_DATA_INVALID) {
		// The key or mechanism was refused; ciphertext problems stay
		// hsm.ErrDecrypt.
		return nil, fmt.Errorf("%w: %v", hsm.ErrInvalid, err)
	}
	if err != nil {
		return nil, classify(err, hsm.ErrDecrypt)
	}
	return out, nil
}

// authFailure reports whether a C_Decrypt error is an ordinary failed
// authentication, after which the module has ended the operation and the
// session can be reused.
func authFailure(err error) bool {
	return isRV(err, p11.CKR_GENERAL_ERROR) || isRV(err, p11.CKR_ENCRYPTED_DATA_INVALID) ||
		isRV(err, p11.CKR_ENCRYPTED_DATA_LEN_RANGE)
}
