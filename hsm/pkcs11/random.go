package pkcs11

import (
	"context"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// maxRandom is the largest n that Random accepts, as hsm.Backend documents.
const maxRandom = 1024

// Random returns n bytes from the token's random number generator
// (C_GenerateRandom) on a pooled session. Every failure of the module,
// including a token without a generator, is reported as hsm.ErrUnavailable.
func (b *Backend) Random(ctx context.Context, n int) ([]byte, error) {
	if n < 1 || n > maxRandom {
		return nil, fmt.Errorf("%w: %d random bytes requested, want 1..%d", hsm.ErrInvalid, n, maxRandom)
	}
	var out []byte
	err := b.session(ctx, func(s p11.SessionHandle) error {
		r, err := b.mod.ctx.GenerateRandom(s, n)
		if err != nil {
			return fmt.Errorf("C_GenerateRandom: %w", err)
		}
		if len(r) != n {
			return fmt.Errorf("%w: C_GenerateRandom returned %d bytes, want %d", hsm.ErrUnavailable, len(r), n)
		}
		out = r
		return nil
	})
	if err != nil {
		return nil, classify(err, hsm.ErrUnavailable)
	}
	return out, nil
}
