package mx

// Cached returns the answer cached for domain, without a lookup: ok is
// false when there is none (never asked, or expired) or the lookup failed.
// The caller must not modify anything reachable from it.
func (c *Cache) Cached(domain string) (a Answer, ok bool) {
	a, err, ok := c.mx.cached(domain, c.now())
	return a, ok && err == nil
}
