package cache

import (
	"context"
	"errors"
	"time"
)

// errWatchEnded stands for a Watch that returned nil before its context
// ended, which the keystore.Store contract does not allow.
var errWatchEnded = errors.New("cache: watch returned without an error")

// watch runs the wrapped Store's Watch until ctx ends, restarting it with
// backoff when it fails. The cache is in use only between Watch's first
// changed(zero ID) call and its return.
func (c *Store) watch(ctx context.Context, minWait, maxWait time.Duration) {
	wait := minWait
	for {
		connected := false
		err := c.s.Watch(ctx, func(id [16]byte) {
			if id == ([16]byte{}) && !connected {
				connected = true
				c.setConnected(true)
				return
			}
			c.invalidate(id)
		})
		if connected {
			c.setConnected(false)
			wait = minWait
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errWatchEnded
		}
		c.log.WarnContext(ctx, "keystore cache: watching for changes failed; reading through until it reconnects",
			"error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, maxWait)
	}
}

// refresh drops everything on each tick until ctx ends.
func (c *Store) refresh(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			c.dropAll()
		}
	}
}
