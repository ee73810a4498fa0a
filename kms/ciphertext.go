package kms

import (
	"encoding/binary"

	"github.com/sigil-kms/sigil/hsm"
)

// Ciphertext format v1:
//
//	byte 0        format, 0x01
//	bytes 1..16   key id (the key's UUID)
//	bytes 17..20  key version, big-endian uint32
//	bytes 21..32  96-bit random nonce
//	bytes 33..    AES-256-GCM ciphertext || 16-byte tag
//
// The GCM associated data is bytes 0..32 followed by the caller's associated
// data, so editing any header byte breaks the tag.
const (
	formatV1      byte = 0x01
	headerSize         = 1 + 16 + 4 + hsm.NonceSize
	minCiphertext      = headerSize + hsm.TagSize
)

// header is the parsed, authenticated prefix of a v1 ciphertext.
type header struct {
	keyID   [16]byte
	version uint32
	nonce   [hsm.NonceSize]byte
}

// marshal returns the header's headerSize bytes.
func (h header) marshal() []byte {
	b := make([]byte, headerSize, headerSize+hsm.TagSize)
	b[0] = formatV1
	copy(b[1:17], h.keyID[:])
	binary.BigEndian.PutUint32(b[17:21], h.version)
	copy(b[21:33], h.nonce[:])
	return b
}

// parseCiphertext splits a v1 ciphertext into its header, the header bytes
// and the sealed body. It reports false for anything that is not a
// well-formed v1 ciphertext.
func parseCiphertext(ct []byte) (header, []byte, bool) {
	var h header
	if len(ct) < minCiphertext || ct[0] != formatV1 {
		return h, nil, false
	}
	copy(h.keyID[:], ct[1:17])
	h.version = binary.BigEndian.Uint32(ct[17:21])
	copy(h.nonce[:], ct[21:33])
	if h.version == 0 {
		return h, nil, false
	}
	return h, ct[headerSize:], true
}

// associatedData returns the GCM associated data: the header followed by the
// caller's associated data.
func associatedData(hdr, aad []byte) []byte {
	out := make([]byte, 0, len(hdr)+len(aad))
	out = append(out, hdr...)
	return append(out, aad...)
}
