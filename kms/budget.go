package kms

import (
	"context"
	"sync"

	"github.com/sigil-kms/sigil/keystore"
)

// budget counts encryptions per AES version against the random-nonce
// bound. Counts are reserved from the store a batch at a time, so the
// persisted count is never below the true one, even after a crash, and
// the store sees one write per batch rather than per request.
type budget struct {
	soft, hard, batch int64

	mu sync.Mutex
	// left is the number of reserved, unused encryptions per version.
	left map[versionRef]int64
	// due holds keys whose primary crossed the soft limit, for the
	// scheduler to rotate.
	due map[[16]byte]uint32
}

func (b *budget) init() {
	b.left = make(map[versionRef]int64)
	b.due = make(map[[16]byte]uint32)
}

// take uses one encryption of the version, reserving a new batch from the
// store when the reserved ones are used up. It refuses once the version
// reached the hard limit, and marks the key for rotation at the soft one.
func (s *Service) takeEncryption(ctx context.Context, k keystore.Key, v keystore.Version) error {
	b := &s.budget
	ref := versionRef{k.ID, v.Version}
	b.mu.Lock()
	if b.left[ref] > 0 {
		b.left[ref]--
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	total, err := s.store.ReserveEncryptions(ctx, k.ID, v.Version, b.batch)
	if err != nil {
		return internal("reserve encryptions", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if total >= b.soft {
		b.due[k.ID] = v.Version
	}
	if total > b.hard {
		return newError(ErrFailedPrecondition, "key version reached its encryption limit; rotate the key")
	}
	b.left[ref] += b.batch - 1
	return nil
}

// dueForBudget returns and forgets the keys whose primary crossed the soft
// limit, with that version.
func (b *budget) dueForBudget() map[[16]byte]uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	due := b.due
	b.due = make(map[[16]byte]uint32)
	return due
}
