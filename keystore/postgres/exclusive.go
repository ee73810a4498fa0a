package postgres

import (
	"context"
	"hash/fnv"
)

// exclusiveLock returns the key of the session-level advisory lock that
// RunExclusive takes for name: a stable 64-bit hash, so that every replica
// and release derives the same key.
func exclusiveLock(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("sigil:exclusive:" + name))
	return int64(h.Sum64()) //nolint:gosec // any 64 bits will do
}

// RunExclusive runs fn while holding a session-level advisory lock named by
// name on a connection of its own, unless another session (of any Store on
// the database, or of this one) holds it, in which case it returns false
// at once. It returns fn's error unchanged. The lock is released when fn
// returns, even if ctx has ended; if that fails the connection is closed,
// which releases it too. If the connection is lost while fn runs, the lock
// is lost with it and another replica may start: fn's work must tolerate
// that, as ClaimRotation does.
func (s *Store) RunExclusive(ctx context.Context, name string, fn func(ctx context.Context) error) (ran bool, err error) {
	const op = "run exclusive"
	lock := exclusiveLock(name)
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, translate(ctx, op, err)
	}
	var locked bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lock).Scan(&locked); err != nil {
		c.Release()
		return false, translate(ctx, op, err)
	}
	if !locked {
		c.Release()
		return false, nil
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		var unlocked bool
		if err := c.QueryRow(uctx, `SELECT pg_advisory_unlock($1)`, lock).Scan(&unlocked); err != nil || !unlocked {
			_ = c.Hijack().Close(uctx)
			return
		}
		c.Release()
	}()
	return true, fn(ctx)
}
