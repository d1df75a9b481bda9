package mx

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
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

// Cache answers MX lookups, and the address lookups of MX hosts, from
// memory when it can, and collapses concurrent lookups of one name into a
// single query. The zero value is not usable; fill Resolver. Safe for
// concurrent use.
type Cache struct {
	Resolver      Resolver
	TTL           time.Duration    // answers and permanent failures; 0 = DefaultTTL, <0 = no caching
	TemporaryTTL  time.Duration    // temporary failures; 0 = DefaultTemporaryTTL, <0 = no caching
	LookupTimeout time.Duration    // 0 = DefaultLookupTimeout
	Now           func() time.Time // nil = time.Now; a test seam
	// Context is the parent of every lookup (which runs on its own
	// context, shared by the callers waiting for it): cancelling it stops
	// the lookups in flight, when their owner shuts down. nil = Background.
	Context context.Context

	mx    ttlCache[Answer]
	hosts ttlCache[[]net.IPAddr]
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

// ttlFor is how long a lookup's outcome is kept.
func (c *Cache) ttlFor(temporary bool) time.Duration {
	if temporary {
		return ttlOr(c.TemporaryTTL, DefaultTemporaryTTL)
	}
	return ttlOr(c.TTL, DefaultTTL)
}

// Peek returns the cached answer without copying. The caller must not modify
// anything reachable from it. It performs the lookup when needed.
func (c *Cache) Peek(ctx context.Context, domain string) (Answer, error) {
	if a, err, ok := c.mx.cached(domain, c.now()); ok {
		return a, err
	}
	a, err := c.mx.get(ctx, c.Context, domain, c.now, ttlOr(c.LookupTimeout, DefaultLookupTimeout),
		func(ctx context.Context) (Answer, error, time.Duration) {
			a, err := Resolve(ctx, c.Resolver, domain)
			me, _ := err.(*Error)
			return a, err, c.ttlFor(me != nil && me.Temporary())
		})
	if err != nil {
		if _, ok := err.(*Error); !ok { // the caller's context ended
			return Answer{}, &Error{Domain: domain, Kind: ErrTemporary, Cause: err}
		}
	}
	return a, err
}

// LookupHost returns the addresses of an MX host, cached like the MX
// answers (the resolver's own error when the lookup fails). The slice is
// shared: the caller must not modify it.
func (c *Cache) LookupHost(ctx context.Context, host string) ([]net.IPAddr, error) {
	if addrs, err, ok := c.hosts.cached(host, c.now()); ok {
		return addrs, err
	}
	return c.hosts.get(ctx, c.Context, host, c.now, ttlOr(c.LookupTimeout, DefaultLookupTimeout),
		func(ctx context.Context) ([]net.IPAddr, error, time.Duration) {
			addrs, err := c.Resolver.LookupIPAddr(ctx, host)
			var de *net.DNSError
			temporary := err != nil && !(errors.As(err, &de) && de.IsNotFound)
			return addrs, err, c.ttlFor(temporary)
		})
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

// LookupInto is Lookup with the copy made in hosts and records when they
// are long enough (see ShuffledInto): a caller that delivers message after
// message to one domain keeps them, and allocates nothing.
func (c *Cache) LookupInto(ctx context.Context, domain string, hosts []*net.MX, records []net.MX) (Answer, error) {
	a, err := c.Peek(ctx, domain)
	if err != nil {
		return Answer{}, err
	}
	return a.ShuffledInto(hosts, records), nil
}

// Shuffled returns a deep copy of a with hosts of equal preference in random
// order.
func (a Answer) Shuffled() Answer { return a.ShuffledInto(nil, nil) }

// ShuffledInto is Shuffled with the copy made in hosts and records, the
// caller's, when both have room for every host; otherwise in new ones.
func (a Answer) ShuffledInto(hosts []*net.MX, records []net.MX) Answer {
	if len(a.Hosts) <= len(hosts) && len(a.Hosts) <= len(records) {
		hosts, records = hosts[:len(a.Hosts)], records[:len(a.Hosts)]
	} else if len(a.Hosts) == 1 {
		// One MX host, the common case: one allocation for both.
		one := new(struct {
			h [1]*net.MX
			r [1]net.MX
		})
		hosts, records = one.h[:], one.r[:]
	} else {
		hosts, records = make([]*net.MX, len(a.Hosts)), make([]net.MX, len(a.Hosts))
	}
	for i, h := range a.Hosts {
		records[i] = *h
		hosts[i] = &records[i]
	}
	for start := 0; start < len(hosts); {
		end := start + 1
		for end < len(hosts) && hosts[end].Pref == hosts[start].Pref {
			end++
		}
		if group := hosts[start:end]; len(group) > 1 {
			rand.Shuffle(len(group), func(i, j int) { group[i], group[j] = group[j], group[i] })
		}
		start = end
	}
	return Answer{Hosts: hosts, Implicit: a.Implicit}
}

// Forget drops a domain's MX answer from the cache.
func (c *Cache) Forget(domain string) { c.mx.forget(domain) }

// Purge drops every expired entry. The cache also does this by itself as it
// grows, so its maps stay bounded by the number of live names.
func (c *Cache) Purge() {
	now := c.now()
	c.mx.purge(now)
	c.hosts.purge(now)
}
