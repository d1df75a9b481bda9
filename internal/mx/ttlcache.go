package mx

import (
	"context"
	"sync"
	"time"
)

// minPurge is the map size below which expired entries are left alone.
const minPurge = 1024

// ttlCache holds one value per key until it expires, and runs at most one
// lookup per key at a time: concurrent callers wait for the same one. The
// lookup runs on its own context, not a caller's, so a caller that gives up
// does not spoil it for the others.
type ttlCache[T any] struct {
	mu        sync.Mutex
	entries   map[string]*entry[T]
	nextPurge int // purge expired entries when the map reaches this size
}

// entry is one key's value, or the lookup that will produce it. Once done
// is closed, value and err never change, so readers need no lock.
type entry[T any] struct {
	done    chan struct{}
	value   T
	err     error
	expires time.Time
}

// get returns key's value, looking it up with fill when it is missing or
// expired. fill returns the value, the error, and how long to keep them
// (negative: not at all).
func (c *ttlCache[T]) get(ctx, parent context.Context, key string, now func() time.Time, timeout time.Duration,
	fill func(ctx context.Context) (T, error, time.Duration)) (T, error) {
	e := c.entry(ctx, parent, key, now, timeout, fill)
	if e == nil { // the context is done and nothing is at hand
		var zero T
		return zero, ctx.Err()
	}
	select {
	case <-e.done: // a value at hand wins over a cancelled context
		return e.value, e.err
	default:
	}
	select {
	case <-e.done:
		return e.value, e.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// cached returns key's value when it is at hand and fresh: the hot path,
// which must not allocate (a fill closure would).
func (c *ttlCache[T]) cached(key string, now time.Time) (T, error, bool) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok {
		select {
		case <-e.done:
			if now.Before(e.expires) {
				return e.value, e.err, true
			}
		default:
		}
	}
	var zero T
	return zero, nil, false
}

// entry returns key's entry, starting a lookup when there is none fresh
// or in flight — unless ctx is already done: then it returns nil, and no
// query goes out for a caller that has given up. (A lookup already in
// flight runs on, bounded by its own timeout, for the callers that share
// it.)
func (c *ttlCache[T]) entry(ctx, parent context.Context, key string, now func() time.Time, timeout time.Duration,
	fill func(ctx context.Context) (T, error, time.Duration)) *entry[T] {
	t := now()
	c.mu.Lock()
	if e, ok := c.entries[key]; ok {
		select {
		case <-e.done:
			if t.Before(e.expires) {
				c.mu.Unlock()
				return e
			}
		default:
			c.mu.Unlock()
			return e // in flight: wait for it
		}
	}
	if ctx.Err() != nil {
		c.mu.Unlock()
		return nil
	}
	if c.entries == nil {
		c.entries = make(map[string]*entry[T])
	}
	if len(c.entries) >= max(c.nextPurge, minPurge) {
		c.purgeLocked(t)
		c.nextPurge = 2 * len(c.entries)
	}
	e := &entry[T]{done: make(chan struct{})}
	c.entries[key] = e
	c.mu.Unlock()

	if parent == nil {
		parent = context.Background()
	}
	go func() {
		ctx, cancel := context.WithTimeout(parent, timeout)
		defer cancel()
		var ttl time.Duration
		e.value, e.err, ttl = fill(ctx)
		e.expires = now().Add(ttl)
		close(e.done)
		if ttl < 0 {
			c.forgetEntry(key, e)
		}
	}()
	return e
}

func (c *ttlCache[T]) forgetEntry(key string, e *entry[T]) {
	c.mu.Lock()
	if c.entries[key] == e {
		delete(c.entries, key)
	}
	c.mu.Unlock()
}

func (c *ttlCache[T]) forget(key string) {
	c.mu.Lock()
	delete(c.entries, key)
	c.mu.Unlock()
}

func (c *ttlCache[T]) purge(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purgeLocked(now)
}

func (c *ttlCache[T]) purgeLocked(now time.Time) {
	for k, e := range c.entries {
		select {
		case <-e.done:
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		default:
		}
	}
}

func (c *ttlCache[T]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
