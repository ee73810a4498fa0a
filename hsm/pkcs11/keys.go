package pkcs11

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// key is a cached key object: its handle and what it is, so that a request
// for the wrong kind of key is refused before the module is called.
type key struct {
	h      p11.ObjectHandle
	class  uint   // CKO_SECRET_KEY or CKO_PRIVATE_KEY
	typ    uint   // CKA_KEY_TYPE
	ecSize int    // for CKK_EC, the curve's byte size if known; else 0
	gen    uint64 // the module generation the handle belongs to
}

// errOldGeneration is the error for a cached handle from before a module
// reset. It reads as a stale handle, so the key is looked up again.
var errOldGeneration = fmt.Errorf("cached handle from before a module reset: %w",
	p11.Error(p11.CKR_OBJECT_HANDLE_INVALID))

// current returns errOldGeneration if k's handle is from before a module
// reset, when the module may have given its number to another object. The
// caller holds the module's read lock.
func (b *Backend) current(k key) error {
	if k.gen != b.pool.generation() {
		return errOldGeneration
	}
	return nil
}

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

// find returns the handles of all objects matching tmpl.
func (b *Backend) find(s p11.SessionHandle, tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	b.finds.Add(1)
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

// object is an object found by identifier: its handle and class, and, for a
// key Sigil uses, what the key is.
type object struct {
	h     p11.ObjectHandle
	class uint
	key   *key // nil unless class is CKO_SECRET_KEY or CKO_PRIVATE_KEY
}

// findID returns every object with the identifier. Only secret and private
// keys are keys Sigil uses; a public key object with the same identifier
// (left by another tool) is returned with a nil key so that it is never
// mistaken for one. If it finds no key, it makes sure with checkToken that
// the token could have shown one.
func (b *Backend) findID(s p11.SessionHandle, id []byte) ([]object, error) {
	hs, err := b.find(s, idTemplate(id))
	if err != nil {
		return nil, err
	}
	objs := make([]object, 0, len(hs))
	for _, h := range hs {
		o, err := b.describe(s, h)
		if staleHandle(err) {
			continue // destroyed since the search
		}
		if err != nil {
			return nil, err
		}
		objs = append(objs, o)
	}
	if len(keys(objs)) == 0 {
		if err := b.checkToken(s); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// describe reads an object's class and, for a key, its key type and curve.
func (b *Backend) describe(s p11.SessionHandle, h p11.ObjectHandle) (object, error) {
	attrs, err := b.mod.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, nil)})
	if err != nil {
		return object{}, fmt.Errorf("C_GetAttributeValue(CKA_CLASS): %w", err)
	}
	o := object{h: h, class: ulong(attrs[0].Value)}
	if o.class != p11.CKO_SECRET_KEY && o.class != p11.CKO_PRIVATE_KEY {
		return o, nil
	}
	attrs, err = b.mod.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return object{}, fmt.Errorf("C_GetAttributeValue(CKA_KEY_TYPE): %w", err)
	}
	k := &key{h: h, class: o.class, typ: ulong(attrs[0].Value), gen: b.pool.generation()}
	if k.typ == p11.CKK_EC {
		attrs, err := b.mod.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_PARAMS, nil)})
		if err != nil {
			return object{}, fmt.Errorf("C_GetAttributeValue(CKA_EC_PARAMS): %w", err)
		}
		k.ecSize = curveSize(attrs[0].Value)
	}
	o.key = k
	return o, nil
}

// keys returns the keys among objs.
func keys(objs []object) []*key {
	var ks []*key
	for _, o := range objs {
		if o.key != nil {
			ks = append(ks, o.key)
		}
	}
	return ks
}

// lookup returns the key with the identifier, from the cache or, on a miss,
// from the token.
func (b *Backend) lookup(ctx context.Context, id []byte) (key, error) {
	if k, ok := b.handles.Load(string(id)); ok {
		return k.(key), nil
	}
	var ks []*key
	err := b.session(ctx, func(s p11.SessionHandle) error {
		objs, err := b.findID(s, id)
		ks = keys(objs)
		return err
	})
	switch {
	case err != nil:
		return key{}, classify(err, hsm.ErrUnavailable)
	case len(ks) == 0:
		return key{}, fmt.Errorf("%w: id %x", hsm.ErrNotFound, id)
	case len(ks) > 1:
		return key{}, fmt.Errorf("%w: %d keys with id %x", hsm.ErrUnavailable, len(ks), id)
	}
	b.handles.Store(string(id), *ks[0])
	return *ks[0], nil
}

// withKey runs fn with the key on a pooled session. If the cached handle
// turns out stale (the object was destroyed, possibly by another process),
// it drops it, looks the key up again and retries once. Errors from fn come
// back unclassified.
func (b *Backend) withKey(ctx context.Context, id []byte, fn func(s p11.SessionHandle, k key) error) error {
	for retried := false; ; retried = true {
		k, err := b.lookup(ctx, id)
		if err != nil {
			return err
		}
		err = b.session(ctx, func(s p11.SessionHandle) error {
			if err := b.current(k); err != nil {
				return err
			}
			err := fn(s, k)
			if staleHandle(err) {
				// Logging out invalidates the handles of private
				// objects, and a token in trouble may hide them.
				if terr := b.checkToken(s); terr != nil {
					return terr
				}
			}
			return err
		})
		if err == nil || !staleHandle(err) {
			return err
		}
		b.handles.CompareAndDelete(string(id), k)
		switch {
		case retried && errors.Is(err, errOldGeneration):
			// The module was reset again between the search and the
			// call: that says nothing about the key.
			return fmt.Errorf("%w: %v", hsm.ErrUnavailable, err)
		case retried:
			return fmt.Errorf("%w: %v", hsm.ErrNotFound, err)
		}
	}
}

// Destroy deletes the key with the identifier, and any public key object
// that shares the identifier. It returns hsm.ErrNotFound, and deletes
// nothing, if there is no key.
func (b *Backend) Destroy(ctx context.Context, id []byte) error {
	if err := checkID(id); err != nil {
		return err
	}
	var n int
	err := b.session(ctx, func(s p11.SessionHandle) error {
		objs, err := b.findID(s, id)
		if err != nil {
			return err
		}
		if n = len(keys(objs)); n == 0 {
			return nil
		}
		for _, o := range objs {
			if o.key == nil && o.class != p11.CKO_PUBLIC_KEY {
				continue // not Sigil's
			}
			if err := b.mod.ctx.DestroyObject(s, o.h); err != nil && !staleHandle(err) {
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

// Exists reports whether a secret or private key with the identifier
// exists. A cached handle is checked with C_GetAttributeValue rather than a
// search.
func (b *Backend) Exists(ctx context.Context, id []byte) (bool, error) {
	if err := checkID(id); err != nil {
		return false, err
	}
	if v, ok := b.handles.Load(string(id)); ok {
		k := v.(key)
		err := b.session(ctx, func(s p11.SessionHandle) error {
			if err := b.current(k); err != nil {
				return err
			}
			_, err := b.mod.ctx.GetAttributeValue(s, k.h,
				[]*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, nil)})
			if staleHandle(err) {
				if terr := b.checkToken(s); terr != nil {
					return terr
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
		b.handles.CompareAndDelete(string(id), k)
	}
	var n int
	err := b.session(ctx, func(s p11.SessionHandle) error {
		objs, err := b.findID(s, id)
		n = len(keys(objs))
		return err
	})
	if err != nil {
		return false, classify(err, hsm.ErrUnavailable)
	}
	return n > 0, nil
}

// ulong decodes a CK_ULONG attribute value, which is in native byte order.
func ulong(v []byte) uint {
	switch len(v) {
	case 8:
		return uint(binary.NativeEndian.Uint64(v))
	case 4:
		return uint(binary.NativeEndian.Uint32(v))
	default:
		return ^uint(0)
	}
}
