package mailroute

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// pool keeps idle sessions to one server for reuse and caps how many are
// open at once, idle or in use. A session is used by one transaction at a
// time: taken with get, handed back with put. When the cap is reached,
// callers queue, and a session put back goes straight to the first of them,
// so a burst never waits on a session that sits idle.
type pool struct {
	max         int // sessions open at once
	maxIdle     int // <0: keep none
	idleTimeout time.Duration
	now         func() time.Time
	dial        func(context.Context) (*smtpclient.Conn, *Error)
	// tls is what the pool's sessions are set up to give (direct pools).
	tls TLSProtection
	// idleBudget, when set, counts idle sessions across several pools;
	// beyond budget a session is ended rather than kept.
	idleBudget *atomic.Int64
	budget     int64

	mu      sync.Mutex
	open    int // idle, in use, or being dialled
	idle    []idleConn
	waiters []chan *smtpclient.Conn // a nil Conn hands over a slot to dial with
	closed  bool
}

type idleConn struct {
	c     *smtpclient.Conn
	since time.Time
}

// get returns a session: an idle one (pooled=true), one handed over by a
// finishing transaction (pooled=true), or a new one.
func (p *pool) get(ctx context.Context) (c *smtpclient.Conn, pooled bool, err *Error) {
	p.mu.Lock()
	for len(p.idle) > 0 {
		ic := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		p.spent(-1)
		if p.now().Sub(ic.since) < p.idleTimeout && ic.c.Usable() {
			p.mu.Unlock()
			return ic.c, true, nil
		}
		// Stale: end it and dial afresh in its slot.
		p.mu.Unlock()
		ic.c.Quit(ctx)
		return p.dialInSlot(ctx)
	}
	if p.open < p.max {
		p.open++
		p.mu.Unlock()
		return p.dialInSlot(ctx)
	}
	ch := make(chan *smtpclient.Conn, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()

	select {
	case c := <-ch:
		if c != nil {
			return c, true, nil
		}
		return p.dialInSlot(ctx)
	case <-ctx.Done():
		p.mu.Lock()
		queued := false
		for i, w := range p.waiters {
			if w == ch {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				queued = true
				break
			}
		}
		p.mu.Unlock()
		if !queued { // something was handed over meanwhile: pass it on
			if c := <-ch; c != nil {
				p.put(c)
			} else {
				p.release()
			}
		}
		return nil, false, &Error{Command: "connect", Err: ctx.Err()}
	}
}

// dialInSlot dials a session in a slot the caller holds.
func (p *pool) dialInSlot(ctx context.Context) (*smtpclient.Conn, bool, *Error) {
	c, err := p.dial(ctx)
	if err != nil {
		p.release()
		return nil, false, err
	}
	return c, false, nil
}

// redial replaces a dead session with a new one in the same slot.
func (p *pool) redial(ctx context.Context, dead *smtpclient.Conn) (*smtpclient.Conn, *Error) {
	dead.Close()
	c, _, err := p.dialInSlot(ctx)
	return c, err
}

// put hands a session back after a transaction: to a waiting caller, to
// the idle list, or to QUIT when it is unusable, the list is full or the
// pool closed. After a successful transaction the session goes on as it is,
// without RSET: the end of data has reset the server's state.
func (p *pool) put(c *smtpclient.Conn) {
	if !c.Usable() {
		c.Close()
		p.release()
		return
	}
	p.mu.Lock()
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w <- c
		return
	}
	if p.closed || p.maxIdle < 0 || len(p.idle) >= p.maxIdle || !p.spent(1) {
		p.mu.Unlock()
		c.Quit(context.Background())
		p.release()
		return
	}
	p.idle = append(p.idle, idleConn{c: c, since: p.now()})
	p.mu.Unlock()
}

// spent counts n idle sessions in or out of the shared budget, reporting
// false (and counting nothing) when taking one in would exceed it.
func (p *pool) spent(n int64) bool {
	if p.idleBudget == nil {
		return true
	}
	if p.idleBudget.Add(n) > p.budget && n > 0 {
		p.idleBudget.Add(-n)
		return false
	}
	return true
}

// reap ends the sessions idle for longer than the idle timeout, and
// reports whether the pool is then unused.
func (p *pool) reap() bool {
	now := p.now()
	var stale []*smtpclient.Conn
	p.mu.Lock()
	kept := p.idle[:0]
	for _, ic := range p.idle {
		if now.Sub(ic.since) >= p.idleTimeout {
			stale = append(stale, ic.c)
			p.open--
			p.spent(-1)
		} else {
			kept = append(kept, ic)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	unused := p.open == 0 && len(p.waiters) == 0
	p.mu.Unlock()
	for _, c := range stale {
		c.Quit(context.Background())
	}
	return unused
}

// unused reports whether the pool has no session open and nobody waiting.
func (p *pool) unused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open == 0 && len(p.waiters) == 0
}

// release frees the slot of a session that is gone, or hands it to the
// first waiting caller.
func (p *pool) release() {
	p.mu.Lock()
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w <- nil
		return
	}
	p.open--
	p.mu.Unlock()
}

// close ends every idle session with QUIT; sessions in use end when they
// are put back.
func (p *pool) close(ctx context.Context) {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.open -= len(idle)
	p.spent(-int64(len(idle)))
	p.mu.Unlock()
	for _, ic := range idle {
		ic.c.Quit(ctx)
	}
}
