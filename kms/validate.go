package kms

import (
	"encoding/base64"
	"encoding/binary"
	"unicode/utf8"
)

// Request limits.
const (
	// MaxPlaintext is the largest plaintext Encrypt accepts.
	MaxPlaintext = 64 << 10
	// MaxAssociatedData is the largest associated data any call accepts.
	MaxAssociatedData = 64 << 10
	// MaxCiphertext is the largest ciphertext Decrypt accepts: a v1
	// ciphertext of a MaxPlaintext plaintext.
	MaxCiphertext = MaxPlaintext + minCiphertext

	maxLabels       = 64
	maxLabelValue   = 255
	defaultPageSize = 100
	maxPageSize     = 1000
)

// ValidName reports whether s is a valid key name: 1 to 63 characters from
// [a-zA-Z0-9_-].
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func checkName(name string) error {
	if !ValidName(name) {
		return newError(ErrInvalidArgument, "key name must match [a-zA-Z0-9_-]{1,63}")
	}
	return nil
}

func checkLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return newError(ErrInvalidArgument, "at most %d labels", maxLabels)
	}
	for k, v := range labels {
		if !ValidName(k) {
			return newError(ErrInvalidArgument, "label keys must match [a-zA-Z0-9_-]{1,63}")
		}
		if len(v) > maxLabelValue || !utf8.ValidString(v) {
			return newError(ErrInvalidArgument, "label values must be UTF-8 of at most %d bytes", maxLabelValue)
		}
	}
	return nil
}

func checkAssociatedData(aad []byte) error {
	if len(aad) > MaxAssociatedData {
		return newError(ErrTooLarge, "associated data exceeds %d bytes", MaxAssociatedData)
	}
	return nil
}

// pageSize returns the number of items to return for a requested page size.
func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, newError(ErrInvalidArgument, "page size must not be negative")
	case n == 0:
		return defaultPageSize, nil
	case n > maxPageSize:
		return maxPageSize, nil
	}
	return int(n), nil
}

// Page tokens are opaque to callers: a key name or a version number, base64url.

func nameToken(name string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(name))
}

func parseNameToken(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !ValidName(string(b)) {
		return "", newError(ErrInvalidArgument, "invalid page token")
	}
	return string(b), nil
}

func versionToken(v uint32) string {
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, v))
}

func parseVersionToken(tok string) (uint32, error) {
	if tok == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != 4 {
		return 0, newError(ErrInvalidArgument, "invalid page token")
	}
	return binary.BigEndian.Uint32(b), nil
}
