package client

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

// Envelope format v1:
//
//	byte 0          format, 0x01
//	bytes 1..2      length n of the wrapped data key, big-endian uint16
//	bytes 3..3+n    the wrapped data key: a Sigil ciphertext of the 32-byte
//	                data key, made by GenerateDataKey with envelopeContext
//	                as associated data
//	next 12 bytes   nonce
//	rest            AES-256-GCM ciphertext || 16-byte tag, under the data
//	                key, with associated data = every byte before it || the
//	                caller's associated data
const (
	envelopeV1  byte = 0x01
	nonceSize        = 12
	tagSize          = 16
	dataKeySize      = 32
)

// envelopeContext is the associated data of every wrapped data key, so that
// a data key cannot be passed off as another Sigil ciphertext.
var envelopeContext = []byte("sigil envelope v1")

// ErrEnvelope is returned, wrapped, for an envelope that cannot be opened:
// malformed, tampered with, the wrong associated data or another key's.
var ErrEnvelope = errors.New("client: envelope cannot be opened")

// EnvelopeOptions bounds the reuse of data keys. The zero value makes a new
// data key for every Seal and asks the server for every Open.
type EnvelopeOptions struct {
	// MaxAge is how long a data key is reused for sealing, and an unwrapped
	// data key kept for opening.
	MaxAge time.Duration
	// MaxMessages is how many messages one data key seals at most (at most
	// 2^31; random nonces).
	MaxMessages int64
	// MaxOpenKeys bounds how many unwrapped data keys are kept for Open.
	// Default 1024 when MaxAge is set.
	MaxOpenKeys int
}

// Envelope seals and opens data of any size on the caller's side with data
// keys that Sigil generates and wraps under one of its keys: one
// GenerateDataKey per data key and one Decrypt per unwrapped key, however
// much data they cover. It is safe for concurrent use.
type Envelope struct {
	c    *Client
	key  string
	opts EnvelopeOptions
	now  func() time.Time

	mu   sync.Mutex
	seal *sealKey
	open map[string]openKey
}

type sealKey struct {
	aead    cipher.AEAD
	wrapped []byte
	born    time.Time
	used    int64
}

type openKey struct {
	aead cipher.AEAD
	born time.Time
}

// Envelope returns an Envelope that wraps data keys under the named key.
func (c *Client) Envelope(key string, opts EnvelopeOptions) *Envelope {
	if opts.MaxMessages <= 0 || opts.MaxMessages > 1<<31 {
		opts.MaxMessages = 1 << 31
	}
	if opts.MaxOpenKeys <= 0 {
		opts.MaxOpenKeys = 1024
	}
	return &Envelope{c: c, key: key, opts: opts, now: time.Now, open: make(map[string]openKey)}
}

// Seal encrypts plaintext, bound to aad, and returns the envelope.
func (e *Envelope) Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error) {
	k, err := e.sealKey(ctx)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return sealWith(k.aead, k.wrapped, nonce, plaintext, aad), nil
}

// sealKey returns a data key for one more message: the cached one while it
// is young and has messages left, else a new one.
func (e *Envelope) sealKey(ctx context.Context) (*sealKey, error) {
	e.mu.Lock()
	if k := e.seal; k != nil && e.opts.MaxAge > 0 && e.now().Sub(k.born) < e.opts.MaxAge && k.used < e.opts.MaxMessages {
		k.used++
		e.mu.Unlock()
		return k, nil
	}
	e.mu.Unlock()
	res, err := e.c.GenerateDataKey(ctx, &sigilv1.GenerateDataKeyRequest{Name: e.key, AssociatedData: envelopeContext})
	if err != nil {
		return nil, err
	}
	dk := res.GetPlaintext()
	defer clear(dk)
	if len(dk) != dataKeySize || len(res.GetCiphertext()) > 0xffff {
		return nil, errors.New("client: server sent a malformed data key")
	}
	aead, err := newGCM(dk)
	if err != nil {
		return nil, err
	}
	k := &sealKey{aead: aead, wrapped: res.GetCiphertext(), born: e.now(), used: 1}
	if e.opts.MaxAge > 0 {
		e.mu.Lock()
		e.seal = k
		e.mu.Unlock()
	}
	return k, nil
}

// Open decrypts an envelope that Seal made under the same Sigil key with
// the same aad.
func (e *Envelope) Open(ctx context.Context, envelope, aad []byte) ([]byte, error) {
	wrapped, nonce, body, hdr, err := parseEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	aead, err := e.openKey(ctx, wrapped)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nonce, body, append(hdr[:len(hdr):len(hdr)], aad...))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrEnvelope)
	}
	return pt, nil
}

// openKey unwraps a data key through the server, or takes it from the
// cache.
func (e *Envelope) openKey(ctx context.Context, wrapped []byte) (cipher.AEAD, error) {
	if e.opts.MaxAge > 0 {
		e.mu.Lock()
		k, ok := e.open[string(wrapped)]
		e.mu.Unlock()
		if ok && e.now().Sub(k.born) < e.opts.MaxAge {
			return k.aead, nil
		}
	}
	res, err := e.c.KeyManagementServiceClient.Decrypt(ctx, &sigilv1.DecryptRequest{Name: e.key, Ciphertext: wrapped, AssociatedData: envelopeContext})
	if connect.CodeOf(err) == connect.CodeInvalidArgument {
		return nil, fmt.Errorf("%w: the wrapped data key does not decrypt", ErrEnvelope)
	}
	if err != nil {
		return nil, err
	}
	dk := res.GetPlaintext()
	defer clear(dk)
	if len(dk) != dataKeySize {
		return nil, fmt.Errorf("%w: wrapped key is not a data key", ErrEnvelope)
	}
	aead, err := newGCM(dk)
	if err != nil {
		return nil, err
	}
	if e.opts.MaxAge > 0 {
		e.mu.Lock()
		if len(e.open) >= e.opts.MaxOpenKeys {
			clear(e.open)
		}
		e.open[string(wrapped)] = openKey{aead: aead, born: e.now()}
		e.mu.Unlock()
	}
	return aead, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealWith lays out an envelope.
func sealWith(aead cipher.AEAD, wrapped, nonce, plaintext, aad []byte) []byte {
	hdr := make([]byte, 0, 3+len(wrapped)+nonceSize+len(plaintext)+tagSize)
	hdr = append(hdr, envelopeV1)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(wrapped)))
	hdr = append(hdr, wrapped...)
	hdr = append(hdr, nonce...)
	ad := append(hdr[:len(hdr):len(hdr)], aad...)
	return aead.Seal(hdr, nonce, plaintext, ad)
}

// parseEnvelope splits an envelope into the wrapped key, nonce, sealed body
// and the header bytes (everything before the body).
func parseEnvelope(b []byte) (wrapped, nonce, body, hdr []byte, err error) {
	if len(b) < 3 || b[0] != envelopeV1 {
		return nil, nil, nil, nil, fmt.Errorf("%w: not an envelope", ErrEnvelope)
	}
	n := int(binary.BigEndian.Uint16(b[1:3]))
	end := 3 + n + nonceSize
	if len(b) < end+tagSize {
		return nil, nil, nil, nil, fmt.Errorf("%w: truncated", ErrEnvelope)
	}
	return b[3 : 3+n], b[3+n : end], b[end:], b[:end], nil
}
