package pkcs11

import (
	"context"
	"crypto/sha256"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// digestInfoSHA256 is the DER prefix of a PKCS #1 DigestInfo for a SHA-256
// digest (RFC 8017, section 9.2, note 1).
var digestInfoSHA256 = []byte{
	0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
	0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
}

// signKeyType returns the CKA_KEY_TYPE that can sign with m.
func signKeyType(m hsm.Mechanism) (uint, error) {
	switch m {
	case hsm.ECDSA:
		return p11.CKK_EC, nil
	case hsm.RSAPSSSHA256, hsm.RSAPKCS1SHA256:
		return p11.CKK_RSA, nil
	case hsm.EdDSA:
		return ckkECEdwards, nil
	}
	return 0, fmt.Errorf("%w: mechanism %d", hsm.ErrInvalid, int(m))
}

// checkInput rejects input that m cannot sign: an RSA digest must be a
// SHA-256 digest and an ECDSA digest must not be empty.
func checkInput(m hsm.Mechanism, input []byte) error {
	switch {
	case (m == hsm.RSAPSSSHA256 || m == hsm.RSAPKCS1SHA256) && len(input) != sha256.Size:
		return fmt.Errorf("%w: SHA-256 digest is %d bytes, want %d", hsm.ErrInvalid, len(input), sha256.Size)
	case m == hsm.ECDSA && len(input) == 0:
		return fmt.Errorf("%w: empty ECDSA digest", hsm.ErrInvalid)
	}
	return nil
}

// signMechanism returns the Cryptoki mechanism for m and the data to pass
// to C_Sign.
func signMechanism(m hsm.Mechanism, input []byte) ([]*p11.Mechanism, []byte) {
	switch m {
	case hsm.ECDSA:
		return []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}, input
	case hsm.RSAPSSSHA256:
		params := p11.NewPSSParams(p11.CKM_SHA256, p11.CKG_MGF1_SHA256, sha256.Size)
		return []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_PSS, params)}, input
	case hsm.RSAPKCS1SHA256:
		data := append(append(make([]byte, 0, len(digestInfoSHA256)+len(input)), digestInfoSHA256...), input...)
		return []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS, nil)}, data
	default: // hsm.EdDSA: pure Ed25519 takes no parameters.
		return []*p11.Mechanism{p11.NewMechanism(ckmEdDSA, nil)}, input
	}
}

// Sign signs input with the private key id (C_SignInit, C_Sign). A key
// that cannot sign with m (a secret key, or a key pair of another type) is
// refused with hsm.ErrInvalid before the module is called, from the key
// type cached with the handle. The check is needed, not just cheaper:
// SoftHSM 2.6.1 does not match the key type to the mechanism in C_SignInit,
// so ECDSA with an Ed25519 key fails later with CKR_GENERAL_ERROR and PSS
// with an Ed25519 key crashes the process.
func (b *Backend) Sign(ctx context.Context, id, input []byte, m hsm.Mechanism) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	want, err := signKeyType(m)
	if err != nil {
		return nil, err
	}
	if err := checkInput(m, input); err != nil {
		return nil, err
	}
	var out []byte
	err = b.withKey(ctx, id, func(s p11.SessionHandle, k key) error {
		if k.class != p11.CKO_PRIVATE_KEY || k.typ != want {
			return fmt.Errorf("%w: key %x cannot sign with mechanism %d", hsm.ErrInvalid, id, int(m))
		}
		mech, data := signMechanism(m, input)
		if err := b.mod.ctx.SignInit(s, mech, k.h); err != nil {
			return fmt.Errorf("C_SignInit: %w", err)
		}
		sig, err := b.mod.ctx.Sign(s, data)
		if err != nil {
			// C_Sign ends the operation, but a session in doubt is not
			// worth keeping.
			return dirtyError{fmt.Errorf("C_Sign: %w", err)}
		}
		if m == hsm.ECDSA && k.ecSize > 0 && len(sig) != 2*k.ecSize {
			return fmt.Errorf("%w: C_Sign returned a %d-byte ECDSA signature, want %d", hsm.ErrUnavailable, len(sig), 2*k.ecSize)
		}
		out = sig
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

// misuse reports whether err is the module refusing a key or mechanism
// for the operation, which is a caller error rather than an outage.
func misuse(err error) bool {
	for _, rv := range []uint{
		p11.CKR_KEY_TYPE_INCONSISTENT, p11.CKR_KEY_FUNCTION_NOT_PERMITTED,
		p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID,
		p11.CKR_DATA_LEN_RANGE, p11.CKR_DATA_INVALID,
	} {
		if isRV(err, rv) {
			return true
		}
	}
	return false
}
