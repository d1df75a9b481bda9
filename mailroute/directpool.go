package mailroute

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// Direct sessions are kept for a burst of messages to one MX host, not for
// long: a receiving MX owes us nothing, and Postfix's connection cache keeps
// its sessions about as briefly.
const (
	directIdleTimeout = 5 * time.Second
	// directIdleBudget caps the idle direct sessions kept across all MX
	// hosts, so a fan-out to thousands of domains does not hold thousands
	// of sockets open.
	directIdleBudget = 256
	reapInterval     = time.Second
)

// directPools holds one session pool per MX host and address. The host
// name is part of the key because a session verified for one name under
// RequireTLS must not carry mail for another that shares its address.
type directPools struct {
	m    *Mailer
	idle atomic.Int64 // idle sessions across all pools

	mu     sync.Mutex
	pools  map[directKey]*pool
	closed bool // after close, pools are made closed: sessions end when put back
}

type directKey struct {
	host string
	addr netip.Addr
	tls  string // hostTLS.key: sessions of one TLS policy only
}

// get returns the pool for an MX host at one of its addresses, under one
// TLS policy.
func (d *directPools) get(host string, addr netip.Addr, ht *hostTLS) *pool {
	k := directKey{host, addr, ht.key}
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.pools[k]; p != nil {
		return p
	}
	if d.pools == nil {
		d.pools = make(map[directKey]*pool)
	}
	p := &pool{
		max:         d.m.cfg.maxConnsPerHost(),
		maxIdle:     d.m.cfg.maxConnsPerHost(),
		idleTimeout: directIdleTimeout,
		now:         time.Now,
		idleBudget:  &d.idle,
		budget:      directIdleBudget,
		dial: func(ctx context.Context) (*smtpclient.Conn, *Error) {
			return d.m.dialDirect(ctx, addr, host, ht)
		},
		closed: d.closed,
		tls:    ht.level,
	}
	d.pools[k] = p
	return p
}

// reap closes sessions idle too long and forgets pools with nothing open.
func (d *directPools) reap() {
	d.mu.Lock()
	pools := make(map[directKey]*pool, len(d.pools))
	for k, p := range d.pools {
		pools[k] = p
	}
	d.mu.Unlock()
	for k, p := range pools {
		if p.reap() {
			d.mu.Lock()
			if d.pools[k] == p && p.unused() {
				delete(d.pools, k)
			}
			d.mu.Unlock()
		}
	}
}

// close ends every idle session.
func (d *directPools) close(ctx context.Context) {
	d.mu.Lock()
	pools := d.pools
	d.pools = nil
	d.closed = true
	d.mu.Unlock()
	for _, p := range pools {
		p.close(ctx)
	}
}
