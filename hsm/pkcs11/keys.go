package pkcs11

import (
	"context"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// checkID rejects identifiers of the wrong length.
func checkID(id []byte) error {
	if len(id) != hsm.IDSize {
		return fmt.Errorf("%w: key id is %d bytes, want %d", hsm.ErrInvalid, len(id), hsm.IDSize)
	}
	return nil
}

// idTemplate matches every object with the identifier.
func idTemplate(id []byte) []*p11.Attribute {
	return []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)}
}

// keyTemplate matches the secret key with the identifier.
func keyTemplate(id []byte) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_ID, id),
	}
}

// GenerateKey creates a persistent, sensitive, non-extractable AES-256 key
// usable only for encryption and decryption.
func (b *Backend) GenerateKey(ctx context.Context, spec hsm.KeySpec) error {
	if err := checkID(spec.ID); err != nil {
		return err
	}
	if spec.Type != hsm.AES256 {
		return fmt.Errorf("%w: key type %v", hsm.ErrInvalid, spec.Type)
	}
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
	b.genMu.Lock()
	defer b.genMu.Unlock()
	var h p11.ObjectHandle
	err := b.session(ctx, func(s p11.SessionHandle) error {
		hs, err := b.find(s, idTemplate(spec.ID))
		if err != nil {
			return err
		}
		if len(hs) > 0 {
			return fmt.Errorf("%w: id %x", hsm.ErrExists, spec.ID)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("hsm: %w", err)
		}
		h, err = b.mod.ctx.GenerateKey(s, mech, tmpl)
		if err != nil {
			return fmt.Errorf("C_GenerateKey: %w", err)
		}
		return nil
	})
	if err != nil {
		return classify(err, hsm.ErrUnavailable)
	}
	b.handles.Store(string(spec.ID), h)
	return nil
}

// find returns the handles of all objects matching tmpl. It first checks
// that the token is logged in, since a logged-out token hides private
// objects and the search would wrongly find nothing.
func (b *Backend) find(s p11.SessionHandle, tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	b.finds.Add(1)
	if err := b.checkLogin(s); err != nil {
		return nil, err
	}
	if err := b.mod.ctx.FindObjectsInit(s, tmpl); err != nil {
		return nil, fmt.Errorf("C_FindObjectsInit: %w", err)
	}
	var all []p11.ObjectHandle
	for {
		hs, _, err := b.mod.ctx.FindObjects(s, 16)
		if err != nil {
			_ = b.mod.ctx.FindObjectsFinal(s)
			return nil, dirtyError{fmt.Errorf("C_FindObjects: %w", err)}
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	if err := b.mod.ctx.FindObjectsFinal(s); err != nil {
		return nil, dirtyError{fmt.Errorf("C_FindObjectsFinal: %w", err)}
	}
	return all, nil
}

// handle returns the secret key's handle, from the cache or, on a miss,
// from the token.
func (b *Backend) handle(ctx context.Context, id []byte) (p11.ObjectHandle, error) {
	if h, ok := b.handles.Load(string(id)); ok {
		return h.(p11.ObjectHandle), nil
	}
	var hs []p11.ObjectHandle
	err := b.session(ctx, func(s p11.SessionHandle) (err error) {
		hs, err = b.find(s, keyTemplate(id))
		return err
	})
	switch {
	case err != nil:
		return 0, classify(err, hsm.ErrUnavailable)
	case len(hs) == 0:
		return 0, fmt.Errorf("%w: id %x", hsm.ErrNotFound, id)
	case len(hs) > 1:
		return 0, fmt.Errorf("%w: %d secret keys with id %x", hsm.ErrUnavailable, len(hs), id)
	}
	b.handles.Store(string(id), hs[0])
	return hs[0], nil
}

// withKey runs fn with the key's handle on a pooled session. If the cached
// handle turns out stale (the object was destroyed, possibly by another
// process), it drops it, looks the key up again and retries once. Errors
// from fn come back unclassified.
func (b *Backend) withKey(ctx context.Context, id []byte, fn func(s p11.SessionHandle, h p11.ObjectHandle) error) error {
	for retried := false; ; retried = true {
		h, err := b.handle(ctx, id)
		if err != nil {
			return err
		}
		err = b.session(ctx, func(s p11.SessionHandle) error {
			err := fn(s, h)
			if staleHandle(err) {
				// Logging out invalidates the handles of private objects.
				if lerr := b.checkLogin(s); lerr != nil {
					return lerr
				}
			}
			return err
		})
		if err == nil || !staleHandle(err) {
			return err
		}
		b.handles.CompareAndDelete(string(id), h)
		if retried {
			return fmt.Errorf("%w: %v", hsm.ErrNotFound, err)
		}
	}
}

// Destroy deletes every object with the identifier.
func (b *Backend) Destroy(ctx context.Context, id []byte) error {
	if err := checkID(id); err != nil {
		return err
	}
	var n int
	err := b.session(ctx, func(s p11.SessionHandle) error {
		hs, err := b.find(s, idTemplate(id))
		if err != nil {
			return err
		}
		n = len(hs)
		for _, h := range hs {
			if err := b.mod.ctx.DestroyObject(s, h); err != nil && !staleHandle(err) {
				return fmt.Errorf("C_DestroyObject: %w", err)
			}
		}
		return nil
	})
	b.handles.Delete(string(id))
	switch {
	case err != nil:
		return classify(err, hsm.ErrUnavailable)
	case n == 0:
		return fmt.Errorf("%w: id %x", hsm.ErrNotFound, id)
	}
	return nil
}

// Exists reports whether any object with the identifier exists. A cached
// handle is checked with C_GetAttributeValue rather than a search.
func (b *Backend) Exists(ctx context.Context, id []byte) (bool, error) {
	if err := checkID(id); err != nil {
		return false, err
	}
	if h, ok := b.handles.Load(string(id)); ok {
		err := b.session(ctx, func(s p11.SessionHandle) error {
			_, err := b.mod.ctx.GetAttributeValue(s, h.(p11.ObjectHandle),
				[]*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, nil)})
			if staleHandle(err) {
				if lerr := b.checkLogin(s); lerr != nil {
					return lerr
				}
			}
			if err != nil {
				return fmt.Errorf("C_GetAttributeValue: %w", err)
			}
			return nil
		})
		if err == nil {
			return true, nil
		}
		if !staleHandle(err) {
			return false, classify(err, hsm.ErrUnavailable)
		}
		b.handles.CompareAndDelete(string(id), h)
	}
	var n int
	err := b.session(ctx, func(s p11.SessionHandle) error {
		hs, err := b.find(s, idTemplate(id))
		n = len(hs)
		return err
	})
	if err != nil {
		return false, classify(err, hsm.ErrUnavailable)
	}
	return n > 0, nil
}
