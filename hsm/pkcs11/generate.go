package pkcs11

import (
	"context"
	"crypto"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// GenerateKey creates a persistent, sensitive, non-extractable key. An
// AES256 key can only encrypt and decrypt. For a key pair only the private
// key, which can only sign, is kept in the token; the public key is
// generated as a session object, read, returned and destroyed.
//
// It returns hsm.ErrExists if a secret or private key with spec.ID exists.
// It is retried after a failure only if the module cannot have made the key
// (the failure came before the generation call, or the call was refused for
// want of a session or login), so it never makes two. After any other
// failure it returns hsm.ErrUnavailable and an object with spec.ID may or
// may not exist: the caller must treat the identifier as used, and Destroy
// removes what is left.
func (b *Backend) GenerateKey(ctx context.Context, spec hsm.KeySpec) (crypto.PublicKey, error) {
	if err := checkID(spec.ID); err != nil {
		return nil, err
	}
	if spec.Type != hsm.AES256 && !spec.Type.Asymmetric() {
		return nil, fmt.Errorf("%w: key type %v (%d)", hsm.ErrInvalid, spec.Type, int(spec.Type))
	}
	// One GenerateKey at a time, so that two with the same identifier
	// cannot both find it free; the wait honours ctx.
	select {
	case b.creating <- struct{}{}:
	case <-ctx.Done():
		return nil, ctxError("waiting for another GenerateKey", ctx.Err())
	}
	defer func() { <-b.creating }()
	var (
		k   key
		pub crypto.PublicKey
	)
	err := b.session(ctx, func(s p11.SessionHandle) error {
		objs, err := b.findID(s, spec.ID)
		if err != nil {
			return err
		}
		if len(keys(objs)) > 0 {
			return fmt.Errorf("%w: id %x", hsm.ErrExists, spec.ID)
		}
		if err := ctx.Err(); err != nil {
			return ctxError("before generating", err)
		}
		if spec.Type == hsm.AES256 {
			k, err = b.generateAES(s, spec)
		} else {
			k, pub, err = b.generatePair(s, spec)
		}
		k.gen = b.pool.generation()
		return err
	})
	if err != nil {
		return nil, classify(err, hsm.ErrUnavailable)
	}
	b.handles.Store(string(spec.ID), k)
	return pub, nil
}

// generateAES creates an AES-256 key usable only for encryption and
// decryption (C_GenerateKey).
func (b *Backend) generateAES(s p11.SessionHandle, spec hsm.KeySpec) (key, error) {
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_ID, spec.ID),
		p11.NewAttribute(p11.CKA_LABEL, spec.Label),
	}
	h, err := b.mod.ctx.GenerateKey(s, mech, tmpl)
	if err != nil {
		return key{}, generationError(fmt.Errorf("C_GenerateKey: %w", err))
	}
	return key{h: h, class: p11.CKO_SECRET_KEY, typ: p11.CKK_AES}, nil
}

// generatePair creates a key pair (C_GenerateKeyPair), reads the public key
// and destroys the public key object. If the public key cannot be read, the
// private key is destroyed too, so that no key without a known public key
// stays behind.
func (b *Backend) generatePair(s p11.SessionHandle, spec hsm.KeySpec) (key, crypto.PublicKey, error) {
	a := pairAlgorithms[spec.Type]
	mech := []*p11.Mechanism{p11.NewMechanism(a.genMech, nil)}
	pubTmpl := append([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, a.keyType),
		// A session object: it disappears with the session even if the
		// C_DestroyObject below fails. It has no CKA_ID, so no search for
		// a key can find it.
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_VERIFY_RECOVER, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	}, a.pubParams...)
	privTmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, a.keyType),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_SIGN_RECOVER, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_ID, spec.ID),
		p11.NewAttribute(p11.CKA_LABEL, spec.Label),
	}
	pubH, privH, err := b.mod.ctx.GenerateKeyPair(s, mech, pubTmpl, privTmpl)
	if err != nil {
		return key{}, nil, generationError(fmt.Errorf("C_GenerateKeyPair(%v): %w", spec.Type, err))
	}
	pub, err := a.readPublic(b.mod.ctx, s, pubH)
	// Should destroying the session object fail, it lives on only until the
	// session closes; it holds nothing secret.
	_ = b.mod.ctx.DestroyObject(s, pubH)
	if err != nil {
		if derr := b.mod.ctx.DestroyObject(s, privH); derr != nil {
			err = fmt.Errorf("%w (and destroying the private key: %v)", err, derr)
		}
		// The private key is there if destroying it failed: never retry.
		return key{}, nil, finalError{fmt.Errorf("%w: public key of a new %v key: %w", hsm.ErrUnavailable, spec.Type, err)}
	}
	return key{h: privH, class: p11.CKO_PRIVATE_KEY, typ: a.keyType, ecSize: a.ecSize}, pub, nil
}

// generationError marks the error of a generation call as final unless the
// module refused the call outright, in which case no key was made and the
// call may be retried.
func generationError(err error) error {
	if refused(err) {
		return err
	}
	return finalError{err}
}
