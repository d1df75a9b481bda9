package riverqueue

import "sync"

// Bodies of up to prefetchMax octets come back with the claim that leases
// their message, in the same statement, and wait in the Store's bodyCache
// for the Mailer's Body call that follows: an attempt then costs no query
// of its own to read the body. At most bodyCacheMax octets wait at once;
// past that a body is read by Body as before.
const (
	prefetchMax  = 256 << 10
	bodyCacheMax = 32 << 20
)

// bodyCache holds the bodies claimed with leases until Body takes them, or
// Update, Release or Quarantine ends the lease. A body never changes while
// its message is queued, so an entry is never stale; dropping one only
// costs a query.
type bodyCache struct {
	mu    sync.Mutex
	m     map[string][]byte
	bytes int
}

func (c *bodyCache) put(id string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string][]byte)
	}
	if old, ok := c.m[id]; ok {
		c.bytes -= len(old)
		delete(c.m, id)
	}
	if c.bytes+len(b) > bodyCacheMax {
		return
	}
	c.m[id] = b
	c.bytes += len(b)
}

func (c *bodyCache) take(id string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[id]
	if ok {
		delete(c.m, id)
		c.bytes -= len(b)
	}
	return b, ok
}

func (c *bodyCache) drop(id string) { c.take(id) }
