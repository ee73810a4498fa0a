package softhsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

// Object is a token object as seen through PKCS#11: its class, key type,
// identifier, label and boolean attributes. An attribute the object does
// not have reads as false, or zero.
type Object struct {
	Class uint
	// KeyType is CKA_KEY_TYPE, meaningful only for key objects (CKK_RSA
	// is zero).
	KeyType          uint
	ID               []byte
	Label            string
	Token            bool
	Private          bool
	Sensitive        bool
	AlwaysSensitive  bool
	Extractable      bool
	NeverExtractable bool
	Local            bool
	Encrypt          bool
	Decrypt          bool
	Wrap             bool
	Unwrap           bool
	Sign             bool
	SignRecover      bool
	Verify           bool
	Derive           bool
}

// boolAttrs maps each boolean attribute to its field.
func (o *Object) boolAttrs() map[uint]*bool {
	return map[uint]*bool{
		pkcs11.CKA_TOKEN:             &o.Token,
		pkcs11.CKA_PRIVATE:           &o.Private,
		pkcs11.CKA_SENSITIVE:         &o.Sensitive,
		pkcs11.CKA_ALWAYS_SENSITIVE:  &o.AlwaysSensitive,
		pkcs11.CKA_EXTRACTABLE:       &o.Extractable,
		pkcs11.CKA_NEVER_EXTRACTABLE: &o.NeverExtractable,
		pkcs11.CKA_LOCAL:             &o.Local,
		pkcs11.CKA_ENCRYPT:           &o.Encrypt,
		pkcs11.CKA_DECRYPT:           &o.Decrypt,
		pkcs11.CKA_WRAP:              &o.Wrap,
		pkcs11.CKA_UNWRAP:            &o.Unwrap,
		pkcs11.CKA_SIGN:              &o.Sign,
		pkcs11.CKA_SIGN_RECOVER:      &o.SignRecover,
		pkcs11.CKA_VERIFY:            &o.Verify,
		pkcs11.CKA_DERIVE:            &o.Derive,
	}
}

// Objects logs into the token and returns every object on it, public and
// private, including objects other processes created since the token was
// made. It never logs out: the login state is shared by everything in this
// process that uses the token.
func (t *Token) Objects(tb testing.TB) []Object {
	tb.Helper()
	objs, err := t.objects()
	if err != nil {
		tb.Fatalf("softhsm: listing objects on %q: %v", t.Label, err)
	}
	return objs
}

func (t *Token) objects() ([]Object, error) {
	state.mu.Lock()
	defer state.mu.Unlock()
	p, err := initModule(t.Module)
	if err != nil {
		return nil, err
	}
	slot, err := findSlot(p, t.Label)
	if err != nil {
		return nil, err
	}
	// A fresh session per call: SoftHSM re-reads the token directory when
	// a session searches, so objects written by other processes show up.
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, fmt.Errorf("C_OpenSession: %w", err)
	}
	defer p.CloseSession(sh)
	if err := p.Login(sh, pkcs11.CKU_USER, t.PIN); err != nil &&
		!errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		return nil, fmt.Errorf("C_Login: %w", err)
	}
	handles, err := findAll(p, sh)
	if err != nil {
		return nil, err
	}
	objs := make([]Object, 0, len(handles))
	for _, h := range handles {
		o, err := readObject(p, sh, h)
		if err != nil {
			return nil, err
		}
		objs = append(objs, o)
	}
	return objs, nil
}

// findAll returns the handles of every object the session can see.
func findAll(p *pkcs11.Ctx, sh pkcs11.SessionHandle) ([]pkcs11.ObjectHandle, error) {
	if err := p.FindObjectsInit(sh, nil); err != nil {
		return nil, fmt.Errorf("C_FindObjectsInit: %w", err)
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := p.FindObjects(sh, 64)
		if err != nil {
			p.FindObjectsFinal(sh)
			return nil, fmt.Errorf("C_FindObjects: %w", err)
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	if err := p.FindObjectsFinal(sh); err != nil {
		return nil, fmt.Errorf("C_FindObjectsFinal: %w", err)
	}
	return all, nil
}

// readObject reads the attributes of one object, one attribute per call so
// that an attribute the object's class lacks does not hide the others.
func readObject(p *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) (Object, error) {
	var o Object
	get := func(typ uint) ([]byte, bool, error) {
		attrs, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
		switch {
		case errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)),
			errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)):
			return nil, false, nil
		case err != nil:
			return nil, false, fmt.Errorf("C_GetAttributeValue(0x%x): %w", typ, err)
		case len(attrs) != 1:
			return nil, false, nil
		}
		return attrs[0].Value, true, nil
	}
	v, ok, err := get(pkcs11.CKA_CLASS)
	if err != nil {
		return o, err
	}
	if ok {
		o.Class = decodeUlong(v)
	}
	if v, ok, err = get(pkcs11.CKA_KEY_TYPE); err != nil {
		return o, err
	}
	if ok {
		o.KeyType = decodeUlong(v)
	}
	if v, _, err = get(pkcs11.CKA_ID); err != nil {
		return o, err
	}
	o.ID = v
	if v, _, err = get(pkcs11.CKA_LABEL); err != nil {
		return o, err
	}
	o.Label = string(v)
	for typ, field := range o.boolAttrs() {
		v, ok, err := get(typ)
		if err != nil {
			return o, err
		}
		*field = ok && len(v) == 1 && v[0] != 0
	}
	return o, nil
}

// decodeUlong decodes a CK_ULONG attribute value, which is in native byte
// order.
func decodeUlong(v []byte) uint {
	switch len(v) {
	case 8:
		return uint(binary.NativeEndian.Uint64(v))
	case 4:
		return uint(binary.NativeEndian.Uint32(v))
	default:
		return ^uint(0)
	}
}

// Dir returns the directory in which SoftHSM2 keeps the token's files, so
// that tests can take the token away from the module and give it back.
func (t *Token) Dir(tb testing.TB) string {
	tb.Helper()
	conf, err := os.ReadFile(t.Conf)
	if err != nil {
		tb.Fatal(err)
	}
	root := ""
	for line := range strings.Lines(string(conf)) {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "directories.tokendir" {
			root = strings.TrimSpace(v)
		}
	}
	if root == "" {
		tb.Fatalf("softhsm: no directories.tokendir in %s", t.Conf)
	}
	dirs, err := os.ReadDir(root)
	if err != nil {
		tb.Fatal(err)
	}
	for _, d := range dirs {
		// token.object holds CKA_LABEL among its attributes.
		obj, err := os.ReadFile(filepath.Join(root, d.Name(), "token.object"))
		if err == nil && bytes.Contains(obj, []byte(t.Label)) {
			return filepath.Join(root, d.Name())
		}
	}
	tb.Fatalf("softhsm: no directory for token %q in %s", t.Label, root)
	return ""
}
