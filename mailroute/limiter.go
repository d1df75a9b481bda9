package mailroute

import (
	"context"
	"sync"
)

// hostLimiter caps the connections a Mailer holds open to one host at a
// time (a receiving MX or the relay): receivers throttle, or block, a
// sender that opens many at once. Entries live only while in use.
type hostLimiter struct {
	max int

	mu    sync.Mutex
	hosts map[string]*hostSlots
}

type hostSlots struct {
	free  chan struct{}
	users int // holders and waiters, so the entry outlives none of them
}

// acquire waits for a free slot for key and returns its release function,
// to be called exactly once.
func (l *hostLimiter) acquire(ctx context.Context, key string) (func(), error) {
	l.mu.Lock()
	if l.hosts == nil {
		l.hosts = make(map[string]*hostSlots)
	}
	h := l.hosts[key]
	if h == nil {
		h = &hostSlots{free: make(chan struct{}, l.max)}
		for range l.max {
			h.free <- struct{}{}
		}
		l.hosts[key] = h
	}
	h.users++
	l.mu.Unlock()

	select {
	case <-h.free:
		var once sync.Once
		return func() {
			once.Do(func() {
				h.free <- struct{}{}
				l.leave(key, h)
			})
		}, nil
	case <-ctx.Done():
		l.leave(key, h)
		return nil, ctx.Err()
	}
}

func (l *hostLimiter) leave(key string, h *hostSlots) {
	l.mu.Lock()
	h.users--
	if h.users == 0 {
		delete(l.hosts, key)
	}
	l.mu.Unlock()
}
