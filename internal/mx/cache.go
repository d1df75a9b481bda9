package mx

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Default cache lifetimes.
const (
	DefaultTTL          = 5 * time.Minute
	DefaultTemporaryTTL = 30 * time.Second
	// DefaultLookupTimeout bounds one shared lookup. Callers wait with their
	// own contexts; the lookup itself must not die with whichever caller
	// happened to start it.
	DefaultLookupTimeout = 30 * time.Second
)

// Cache answers MX lookups from memory when it can, and collapses concurrent
// lookups of one domain into a single query. The zero value is not usable;
// fill Resolver. Safe for concurrent use.
type Cache struct {
	Resolver      Resolver
	TTL           time.Duration    // answers and permanent failures; 0 = DefaultTTL, <0 = no caching
	TemporaryTTL  time.Duration    // temporary failures; 0 = DefaultTemporaryTTL, <0 = no caching
	LookupTimeout time.Duration    // 0 = DefaultLookupTimeout
	Now           func() time.Time // nil = time.Now; a test seam

	mu        sync.Mutex
	entries   map[string]*entry
	nextPurge int // purge expired entries when the map reaches this size
}

// minPurge is the map size below which expired entries are left alone.
const minPurge = 1024

// entry is one domain's answer, or the lookup that will produce it. Once done
// is closed, answer and err never change, so readers need no lock.
type entry struct {
	done    chan struct{}
	answer  Answer
	err     error
	expires time.Time
}

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func ttlOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Peek returns the cached answer without copying. The caller must not modify
// anything reachable from it. It performs the lookup when needed.
func (c *Cache) Peek(ctx context.Context, domain string) (Answer, error) {
	e := c.entry(domain)
	select {
	case <-e.done: // an answer at hand wins over a cancelled context
		return e.answer, e.err
	default:
	}
	select {
	case <-e.done:
		return e.answer, e.err
	case <-ctx.Done():
		return Answer{}, &Error{Domain: domain, Kind: ErrTemporary, Cause: ctx.Err()}
	}
}

// Lookup returns the MX hosts of a normalised domain in delivery order:
// sorted by preference, equal preferences shuffled. The slice and the
// records are the caller's own.
func (c *Cache) Lookup(ctx context.Context, domain string) (Answer, error) {
	a, err := c.Peek(ctx, domain)
	if err != nil {
		return Answer{}, err
	}
	return a.Shuffled(), nil
}

// Shuffled returns a deep copy of a with hosts of equal preference in random
// order.
func (a Answer) Shuffled() Answer {
	hosts := make([]*net.MX, len(a.Hosts))
	records := make([]net.MX, len(a.Hosts))
	for i, h := range a.Hosts {
		records[i] = *h
		hosts[i] = &records[i]
	}
	for start := 0; start < len(hosts); {
		end := start + 1
		for end < len(hosts) && hosts[end].Pref == hosts[start].Pref {
			end++
		}
		group := hosts[start:end]
		rand.Shuffle(len(group), func(i, j int) { group[i], group[j] = group[j], group[i] })
		start = end
	}
	return Answer{Hosts: hosts, Implicit: a.Implicit}
}

// entry returns the live cache entry for domain, starting a lookup if there
// is none. Only one lookup per domain is ever in flight.
func (c *Cache) entry(domain string) *entry {
	now := c.now()
	c.mu.Lock()
	if e, ok := c.entries[domain]; ok {
		select {
		case <-e.done:
			if now.Before(e.expires) {
				c.mu.Unlock()
				return e
			}
		default:
			c.mu.Unlock()
			return e // in flight: wait for it
		}
	}
	if c.entries == nil {
		c.entries = make(map[string]*entry)
	}
	if len(c.entries) >= max(c.nextPurge, minPurge) {
		c.purgeLocked(now)
		c.nextPurge = 2 * len(c.entries)
	}
	e := &entry{done: make(chan struct{})}
	c.entries[domain] = e
	c.mu.Unlock()

	go c.fill(domain, e)
	return e
}

func (c *Cache) fill(domain string, e *entry) {
	ctx, cancel := context.WithTimeout(context.Background(), ttlOr(c.LookupTimeout, DefaultLookupTimeout))
	defer cancel()
	e.answer, e.err = Resolve(ctx, c.Resolver, domain)

	ttl := ttlOr(c.TTL, DefaultTTL)
	if e.err != nil {
		if me, ok := e.err.(*Error); ok && me.Temporary() {
			ttl = ttlOr(c.TemporaryTTL, DefaultTemporaryTTL)
		}
	}
	e.expires = c.now().Add(ttl)
	close(e.done)

	if ttl < 0 {
		c.mu.Lock()
		if c.entries[domain] == e {
			delete(c.entries, domain)
		}
		c.mu.Unlock()
	}
}

// Forget drops a domain from the cache.
func (c *Cache) Forget(domain string) {
	c.mu.Lock()
	delete(c.entries, domain)
	c.mu.Unlock()
}

// Purge drops every expired entry. The cache also does this by itself as it
// grows, so the map stays bounded by the number of live domains.
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purgeLocked(c.now())
}

func (c *Cache) purgeLocked(now time.Time) {
	for d, e := range c.entries {
		select {
		case <-e.done:
			if !now.Before(e.expires) {
				delete(c.entries, d)
			}
		default:
		}
	}
}
