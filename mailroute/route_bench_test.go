package mailroute

import (
	"context"
	"testing"
)

// BenchmarkRouteRuleHit: a big-provider mailbox domain, decided from the
// rules without DNS. Target: < 300 ns, 0 allocs.
func BenchmarkRouteRuleHit(b *testing.B) {
	m, _ := newTestMailer(b, Config{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r, err := m.Route(ctx, "friend@gmail.com"); err != nil || r.Via != Relayed {
			b.Fatal(r, err)
		}
	}
}

// BenchmarkRouteDomainPattern: a user rule with a suffix pattern.
func BenchmarkRouteDomainPattern(b *testing.B) {
	m, _ := newTestMailer(b, Config{Router: Rules{
		{Domains: []string{"partner.test", ".internal.test"}, Via: Direct},
		{Providers: BigProviders, Via: Relayed},
		{Domains: []string{"*"}, Via: Direct},
	}})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r, err := m.Route(ctx, "ops@eu.internal.test"); err != nil || r.Via != Direct {
			b.Fatal(r, err)
		}
	}
}

// BenchmarkRouteCachedMX: a vanity domain on Google Workspace, decided by
// its MX hosts from the cache. Target: < 1 µs.
func BenchmarkRouteCachedMX(b *testing.B) {
	m, _ := newTestMailer(b, Config{})
	ctx := context.Background()
	if _, err := m.Route(ctx, "boss@acme.test"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if r, err := m.Route(ctx, "boss@acme.test"); err != nil || r.Via != Relayed {
			b.Fatal(r, err)
		}
	}
}

// BenchmarkRouteCachedMXDirect: an ordinary domain, every provider rule
// checked against its cached MX hosts before "*" decides.
func BenchmarkRouteCachedMXDirect(b *testing.B) {
	m, _ := newTestMailer(b, Config{})
	ctx := context.Background()
	m.Route(ctx, "smallisp.test")
	b.ReportAllocs()
	for b.Loop() {
		if r, err := m.Route(ctx, "friend@smallisp.test"); err != nil || r.Via != Direct {
			b.Fatal(r, err)
		}
	}
}
