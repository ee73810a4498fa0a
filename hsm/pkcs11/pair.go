package pkcs11

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// Cryptoki 3.0 values that github.com/miekg/pkcs11 v1.1.2 does not define.
const (
	ckkECEdwards           = 0x40   // CKK_EC_EDWARDS
	ckmECEdwardsKeyPairGen = 0x1055 // CKM_EC_EDWARDS_KEY_PAIR_GEN
	ckmEdDSA               = 0x1057 // CKM_EDDSA
	rsaPublicExponent      = 65537
)

// DER-encoded object identifiers for CKA_EC_PARAMS. For Ed25519 Cryptoki
// 3.0 allows either the RFC 8410 OID or the PrintableString "edwards25519";
// SoftHSM 2.6.1 takes both, and the OID is what current modules expect.
var (
	oidP256    = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07} // 1.2.840.10045.3.1.7
	oidP384    = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}                   // 1.3.132.0.34
	oidEd25519 = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}                               // 1.3.101.112
)

// pairAlgorithm says how to generate a key pair of one hsm.KeyType and read
// its public key.
type pairAlgorithm struct {
	genMech    uint
	keyType    uint
	ecSize     int              // curve byte size for ECDSA keys
	pubParams  []*p11.Attribute // domain parameters for the public template
	readPublic func(c *p11.Ctx, s p11.SessionHandle, h p11.ObjectHandle) (crypto.PublicKey, error)
}

var pairAlgorithms = map[hsm.KeyType]pairAlgorithm{
	hsm.ECP256:  ecAlgorithm(elliptic.P256(), oidP256),
	hsm.ECP384:  ecAlgorithm(elliptic.P384(), oidP384),
	hsm.RSA2048: rsaAlgorithm(2048),
	hsm.RSA3072: rsaAlgorithm(3072),
	hsm.RSA4096: rsaAlgorithm(4096),
	hsm.Ed25519: {
		genMech:    ckmECEdwardsKeyPairGen,
		keyType:    ckkECEdwards,
		pubParams:  []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_PARAMS, oidEd25519)},
		readPublic: readEd25519,
	},
}

func ecAlgorithm(curve elliptic.Curve, oid []byte) pairAlgorithm {
	size := (curve.Params().BitSize + 7) / 8
	return pairAlgorithm{
		genMech:   p11.CKM_EC_KEY_PAIR_GEN,
		keyType:   p11.CKK_EC,
		ecSize:    size,
		pubParams: []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_PARAMS, oid)},
		readPublic: func(c *p11.Ctx, s p11.SessionHandle, h p11.ObjectHandle) (crypto.PublicKey, error) {
			v, err := attribute(c, s, h, p11.CKA_EC_POINT)
			if err != nil {
				return nil, err
			}
			point, err := unwrapPoint(v, 1+2*size)
			if err != nil {
				return nil, err
			}
			pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
			if err != nil {
				return nil, fmt.Errorf("CKA_EC_POINT: %w", err)
			}
			return pub, nil
		},
	}
}

func rsaAlgorithm(bits int) pairAlgorithm {
	return pairAlgorithm{
		genMech: p11.CKM_RSA_PKCS_KEY_PAIR_GEN,
		keyType: p11.CKK_RSA,
		pubParams: []*p11.Attribute{
			p11.NewAttribute(p11.CKA_MODULUS_BITS, bits),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, big.NewInt(rsaPublicExponent).Bytes()),
		},
		readPublic: func(c *p11.Ctx, s p11.SessionHandle, h p11.ObjectHandle) (crypto.PublicKey, error) {
			n, err := attribute(c, s, h, p11.CKA_MODULUS)
			if err != nil {
				return nil, err
			}
			e, err := attribute(c, s, h, p11.CKA_PUBLIC_EXPONENT)
			if err != nil {
				return nil, err
			}
			pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n)}
			if ev := new(big.Int).SetBytes(e); ev.IsInt64() && ev.Int64() == rsaPublicExponent {
				pub.E = rsaPublicExponent
			} else {
				return nil, fmt.Errorf("CKA_PUBLIC_EXPONENT is %x, want %d", e, rsaPublicExponent)
			}
			if pub.N.BitLen() != bits {
				return nil, fmt.Errorf("CKA_MODULUS has %d bits, want %d", pub.N.BitLen(), bits)
			}
			return pub, nil
		},
	}
}

// readEd25519 reads an Ed25519 public key. CKA_EC_POINT holds the 32-byte
// encoded point, which SoftHSM 2.6.1 wraps in a DER OCTET STRING as for
// ECDSA keys and some modules return raw. Both are accepted.
func readEd25519(c *p11.Ctx, s p11.SessionHandle, h p11.ObjectHandle) (crypto.PublicKey, error) {
	v, err := attribute(c, s, h, p11.CKA_EC_POINT)
	if err != nil {
		return nil, err
	}
	point, err := unwrapPoint(v, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(bytes.Clone(point)), nil
}

// unwrapPoint returns the size-byte point in a CKA_EC_POINT value, which is
// either the point itself or a DER OCTET STRING around it. The two forms
// differ in length, so the raw form is never mistaken for the DER one.
func unwrapPoint(v []byte, size int) ([]byte, error) {
	if len(v) == size {
		return v, nil
	}
	var point []byte
	rest, err := asn1.Unmarshal(v, &point)
	switch {
	case err != nil:
		return nil, fmt.Errorf("CKA_EC_POINT of %d bytes: %w", len(v), err)
	case len(rest) > 0:
		return nil, fmt.Errorf("CKA_EC_POINT: %d bytes after the OCTET STRING", len(rest))
	case len(point) != size:
		return nil, fmt.Errorf("CKA_EC_POINT holds %d bytes, want %d", len(point), size)
	}
	return point, nil
}

// attribute reads one attribute of an object.
func attribute(c *p11.Ctx, s p11.SessionHandle, h p11.ObjectHandle, typ uint) ([]byte, error) {
	attrs, err := c.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(typ, nil)})
	if err != nil {
		return nil, fmt.Errorf("C_GetAttributeValue(0x%x): %w", typ, err)
	}
	if len(attrs) != 1 || len(attrs[0].Value) == 0 {
		return nil, fmt.Errorf("attribute 0x%x: %w", typ, errEmptyAttribute)
	}
	return attrs[0].Value, nil
}

var errEmptyAttribute = errors.New("empty value")

// curveSize returns the byte size of the curve named by a CKA_EC_PARAMS
// value, or 0 for a curve Sigil does not generate.
func curveSize(params []byte) int {
	switch {
	case bytes.Equal(params, oidP256):
		return 32
	case bytes.Equal(params, oidP384):
		return 48
	}
	return 0
}
