package pkcs11

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-kms/sigil/hsm"
)

// pool hands out up to cap(slots) sessions on one token. Sessions are opened
// lazily and kept until they fail, the module is reset or the pool closes.
//
// Every session that is not idle belongs to the goroutine holding one
// element of slots for it, so the pool never has more than cap(slots)
// sessions open and no session is used by two goroutines at once.
type pool struct {
	ctx     *p11.Ctx
	slots   chan struct{} // one element per session in use or being checked
	waiting atomic.Int64  // goroutines blocked waiting for an element of slots
	gen     atomic.Uint64 // the module generation that slot and the sessions belong to

	mu    sync.Mutex
	slot  uint   // the token's slot
	epoch uint64 // incremented whenever a session is found dead
	idle  []idleSession
}

// idleSession is a pooled session and the epoch in which it was last seen
// working. One seen before the current epoch may have died with the session
// that was found dead, and is checked before it is used again.
type idleSession struct {
	h    p11.SessionHandle
	seen uint64
}

// Stats is a snapshot of a Backend's session pool.
type Stats struct {
	// InUse is the number of sessions in use, counting sessions being
	// opened or checked.
	InUse int
	// Idle is the number of open sessions waiting in the pool.
	Idle int
	// Waiting is the number of calls waiting for a session because InUse
	// has reached Max.
	Waiting int
	// Max is the pool size (Config.MaxSessions).
	Max int
}

func newPool(ctx *p11.Ctx, slot uint, gen uint64, size int) *pool {
	p := &pool{ctx: ctx, slots: make(chan struct{}, size), slot: slot}
	p.gen.Store(gen)
	return p
}

// stats returns a snapshot of the pool. The fields are read one after the
// other, so under load they need not add up.
func (p *pool) stats() Stats {
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	return Stats{InUse: len(p.slots), Idle: idle, Waiting: int(p.waiting.Load()), Max: cap(p.slots)}
}

// acquire waits, as long as ctx allows, for a free slot. The caller must
// give it back through put, drop or release.
func (p *pool) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return ctxError("waiting for a session", err)
	}
	select {
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	p.waiting.Add(1)
	defer p.waiting.Add(-1)
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctxError("waiting for a session", ctx.Err())
	}
}

// release gives back a slot that holds no session.
func (p *pool) release() { <-p.slots }

// get waits for a slot and returns a session with take.
func (p *pool) get(ctx context.Context) (p11.SessionHandle, error) {
	if err := p.acquire(ctx); err != nil {
		return 0, err
	}
	return p.take()
}

// take returns a session for the slot the caller holds: the most recently
// used idle session, checked first if a session died since it was last seen
// working, or else a new one. On error it releases the slot.
func (p *pool) take() (p11.SessionHandle, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			slot := p.slot
			p.mu.Unlock()
			return p.open(slot)
		}
		is := p.idle[n-1]
		p.idle = p.idle[:n-1]
		suspect := is.seen < p.epoch
		p.mu.Unlock()
		if !suspect || p.alive(is.h) {
			return is.h, nil
		}
	}
}

// open opens a new session on slot for the slot the caller holds.
func (p *pool) open(slot uint) (p11.SessionHandle, error) {
	s, err := p.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		p.release()
		return 0, fmt.Errorf("%w: C_OpenSession: %w", hsm.ErrUnavailable, err)
	}
	// Cryptoki lets a module give a new session the handle of a dead one
	// (SoftHSM never does); an idle entry with this handle is that dead
	// session and must not be handed out as a second copy of the new one.
	p.mu.Lock()
	p.idle = slices.DeleteFunc(p.idle, func(is idleSession) bool { return is.h == s })
	p.mu.Unlock()
	return s, nil
}

// alive reports whether a session the caller owns still works. A dead one
// is closed unless the module has already forgotten its handle.
func (p *pool) alive(s p11.SessionHandle) bool {
	_, err := p.ctx.GetSessionInfo(s)
	if err == nil {
		return true
	}
	if !handleGone(err) {
		_ = p.ctx.CloseSession(s)
	}
	return false
}

// put returns a working session to the pool and releases its slot.
func (p *pool) put(s p11.SessionHandle) {
	p.mu.Lock()
	p.idle = append(p.idle, idleSession{h: s, seen: p.epoch})
	p.mu.Unlock()
	<-p.slots
}

// drop removes a session from the pool and releases its slot. It closes the
// session unless the module has already forgotten the handle (it could by
// now name another session, which closing would end). If dead, the other
// idle sessions become suspect: whatever killed this one may have killed
// them too.
func (p *pool) drop(s p11.SessionHandle, close, dead bool) {
	if close {
		_ = p.ctx.CloseSession(s)
	}
	if dead {
		p.mu.Lock()
		p.epoch++
		p.mu.Unlock()
	}
	<-p.slots
}

// sweep checks every suspect idle session and closes the dead ones, so that
// the pool does not keep dead handles. It takes a free slot for each
// session it checks and stops when there is none, leaving the rest to be
// checked by take.
func (p *pool) sweep() {
	for {
		select {
		case p.slots <- struct{}{}:
		default:
			return
		}
		p.mu.Lock()
		i := slices.IndexFunc(p.idle, func(is idleSession) bool { return is.seen < p.epoch })
		if i < 0 {
			p.mu.Unlock()
			<-p.slots
			return
		}
		s := p.idle[i].h
		p.idle = slices.Delete(p.idle, i, i+1)
		p.mu.Unlock()
		if p.alive(s) {
			p.mu.Lock()
			// Back at the bottom: the most recently used sessions stay on
			// top.
			p.idle = slices.Insert(p.idle, 0, idleSession{h: s, seen: p.epoch})
			p.mu.Unlock()
		}
		<-p.slots
	}
}

// generation returns the module generation the pool's slot and sessions
// belong to.
func (p *pool) generation() uint64 { return p.gen.Load() }

// currentSlot returns the token's slot.
func (p *pool) currentSlot() uint {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slot
}

// rebind moves the pool to the token's slot in module generation gen. The
// idle sessions died with the old generation and are forgotten, not closed:
// their handles may now name other sessions. The caller makes sure no
// session is in use.
func (p *pool) rebind(slot uint, gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slot, p.idle = slot, nil
	p.gen.Store(gen) // after slot: whoever sees gen sees slot
}

// close closes every idle session. Only this pool's sessions are closed:
// C_CloseAllSessions would also end other Backends' sessions on the token.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, is := range p.idle {
		_ = p.ctx.CloseSession(is.h)
	}
	p.idle = nil
}
