package mx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/dnstest"
)

func startDNS(t *testing.T) (*dnstest.Server, *ServerResolver) {
	t.Helper()
	s, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Add(
		"multi.test. MX 20 b.multi.test.",
		"multi.test. MX 10 a1.multi.test.",
		"multi.test. MX 10 a2.multi.test.",
		"multi.test. MX 30 c.multi.test.",
	)
	s.Host("implicit.test", "127.0.0.7", "::1") // NODATA for MX, has addresses
	s.Add("nodata.test. TXT \"v=spf1 -all\"")   // exists, no MX, no address
	s.NullMX("nullmx.test")
	s.Add("cname.test. CNAME real.test.", "real.test. MX 5 mx.real.test.")
	s.Add("cnamemx.test. MX 5 alias.real.test.", "alias.real.test. CNAME mx.real.test.")
	s.Add("Upper.test. MX 10 MX.Upper.TEST.")
	s.ServFail("servfail.test")
	s.Drop("timeout.test")
	return s, &ServerResolver{Addr: s.Addr, Timeout: 300 * time.Millisecond}
}

func hosts(a Answer) []string {
	var out []string
	for _, h := range a.Hosts {
		out = append(out, h.Host)
	}
	return out
}

func TestResolve(t *testing.T) {
	_, r := startDNS(t)
	ctx := context.Background()

	tests := []struct {
		domain   string
		hosts    []string // nil when an error is expected
		implicit bool
		kind     error
	}{
		{domain: "implicit.test", hosts: []string{"implicit.test"}, implicit: true},
		{domain: "cname.test", hosts: []string{"mx.real.test"}},
		{domain: "cnamemx.test", hosts: []string{"alias.real.test"}},
		{domain: "upper.test", hosts: []string{"mx.upper.test"}},
		{domain: "nodata.test", kind: ErrNoSuchDomain},
		{domain: "nxdomain.test", kind: ErrNoSuchDomain},
		{domain: "nullmx.test", kind: ErrNullMX},
		{domain: "servfail.test", kind: ErrTemporary},
		{domain: "timeout.test", kind: ErrTemporary},
	}
	for _, tt := range tests {
		a, err := Resolve(ctx, r, tt.domain)
		if tt.kind != nil {
			if !errors.Is(err, tt.kind) {
				t.Errorf("%s: err = %v, want %v", tt.domain, err, tt.kind)
			}
			var me *Error
			if !errors.As(err, &me) || me.Domain != tt.domain || me.Temporary() != (tt.kind == ErrTemporary) {
				t.Errorf("%s: err = %#v, want *Error for the domain, temporary=%v", tt.domain, err, tt.kind == ErrTemporary)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.domain, err)
			continue
		}
		if got := hosts(a); len(got) != len(tt.hosts) || got[0] != tt.hosts[0] || a.Implicit != tt.implicit {
			t.Errorf("%s: hosts %v implicit %v, want %v implicit %v", tt.domain, got, a.Implicit, tt.hosts, tt.implicit)
		}
	}
}

func TestNXDOMAINSkipsAddressQuery(t *testing.T) {
	s, r := startDNS(t)
	if _, err := Resolve(context.Background(), r, "nxdomain.test"); !errors.Is(err, ErrNoSuchDomain) {
		t.Fatal(err)
	}
	if n := s.Queries("nxdomain.test", "A") + s.Queries("nxdomain.test", "AAAA"); n != 0 {
		t.Fatalf("%d address queries after NXDOMAIN, want 0", n)
	}
}

// The system resolver cannot tell NXDOMAIN from NODATA: a resolver that
// reports both as "not found" must still yield the implicit MX.
func TestImplicitMXWithNotFoundResolver(t *testing.T) {
	r := fakeResolver{
		mx:    func(string) ([]*net.MX, error) { return nil, &net.DNSError{Err: "no such host", IsNotFound: true} },
		addrs: map[string][]net.IPAddr{"a.test": {{IP: net.ParseIP("192.0.2.1")}}},
	}
	a, err := Resolve(context.Background(), r, "a.test")
	if err != nil || !a.Implicit || a.Hosts[0].Host != "a.test" {
		t.Fatalf("got %+v, %v", a, err)
	}
	if _, err := Resolve(context.Background(), r, "b.test"); !errors.Is(err, ErrNoSuchDomain) {
		t.Fatalf("b.test: %v", err)
	}
	r.mx = func(string) ([]*net.MX, error) { return nil, errors.New("connection refused") }
	if _, err := Resolve(context.Background(), r, "a.test"); !errors.Is(err, ErrTemporary) {
		t.Fatalf("non-DNS error: %v, want temporary", err)
	}
}

type fakeResolver struct {
	mx    func(string) ([]*net.MX, error)
	addrs map[string][]net.IPAddr
}

func (f fakeResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) { return f.mx(name) }
func (f fakeResolver) LookupIPAddr(_ context.Context, name string) ([]net.IPAddr, error) {
	if a, ok := f.addrs[name]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func TestNullMXBesideRealHostsIsIgnored(t *testing.T) {
	r := fakeResolver{mx: func(string) ([]*net.MX, error) {
		return []*net.MX{{Host: ".", Pref: 0}, {Host: "mx.a.test.", Pref: 10}}, nil
	}}
	a, err := Resolve(context.Background(), r, "a.test")
	if err != nil || len(a.Hosts) != 1 || a.Hosts[0].Host != "mx.a.test" {
		t.Fatalf("got %v, %v", hosts(a), err)
	}
}

func TestOrderAndShuffle(t *testing.T) {
	_, r := startDNS(t)
	c := &Cache{Resolver: r}
	firsts := map[string]int{}
	for range 200 {
		a, err := c.Lookup(context.Background(), "multi.test")
		if err != nil {
			t.Fatal(err)
		}
		h := hosts(a)
		if len(h) != 4 || h[2] != "b.multi.test" || h[3] != "c.multi.test" {
			t.Fatalf("order %v: preference 10 pair, then 20, then 30", h)
		}
		firsts[h[0]]++
	}
	if firsts["a1.multi.test"] < 40 || firsts["a2.multi.test"] < 40 {
		t.Fatalf("equal-preference hosts not shuffled: first host counts %v over 200 lookups", firsts)
	}
}

func TestCacheReturnsPrivateCopies(t *testing.T) {
	_, r := startDNS(t)
	c := &Cache{Resolver: r}
	a, err := c.Lookup(context.Background(), "cname.test")
	if err != nil {
		t.Fatal(err)
	}
	a.Hosts[0].Host = "evil.test"
	a.Hosts[0] = &net.MX{Host: "evil2.test"}
	b, _ := c.Lookup(context.Background(), "cname.test")
	if b.Hosts[0].Host != "mx.real.test" {
		t.Fatalf("a caller's change leaked into the cache: %v", hosts(b))
	}
}

func TestCacheTTLs(t *testing.T) {
	s, r := startDNS(t)
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	c := &Cache{Resolver: r, TTL: time.Minute, TemporaryTTL: 10 * time.Second, Now: clock}
	ctx := context.Background()

	lookup := func(domain string) {
		t.Helper()
		c.Lookup(ctx, domain)
	}
	lookup("cname.test")
	lookup("cname.test")
	if n := s.Queries("cname.test", "MX"); n != 1 {
		t.Fatalf("positive answer: %d queries, want 1", n)
	}
	advance(61 * time.Second)
	lookup("cname.test")
	if n := s.Queries("cname.test", "MX"); n != 2 {
		t.Fatalf("after the TTL: %d queries, want 2", n)
	}

	lookup("servfail.test")
	lookup("servfail.test")
	if n := s.Queries("servfail.test", "MX"); n != 1 {
		t.Fatalf("temporary failure: %d queries, want 1 (cached)", n)
	}
	advance(11 * time.Second)
	lookup("servfail.test")
	if n := s.Queries("servfail.test", "MX"); n != 2 {
		t.Fatalf("temporary failure after its TTL: %d queries, want 2", n)
	}

	lookup("nxdomain.test")
	advance(30 * time.Second)
	lookup("nxdomain.test")
	if n := s.Queries("nxdomain.test", "MX"); n != 1 {
		t.Fatalf("permanent failure: %d queries within the TTL, want 1", n)
	}
}

// 1,000 concurrent lookups of one uncached domain issue exactly one query.
func TestSingleflight(t *testing.T) {
	s, r := startDNS(t)
	c := &Cache{Resolver: r}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Lookup(context.Background(), "multi.test"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := s.TotalQueries(); n != 1 {
		t.Fatalf("%d DNS queries for 1,000 concurrent lookups, want 1", n)
	}
}

// A caller that gives up does not spoil the shared lookup for the others.
func TestCallerCancelDoesNotCancelSharedLookup(t *testing.T) {
	var calls atomic.Int32
	r := fakeResolver{mx: func(string) ([]*net.MX, error) {
		calls.Add(1)
		time.Sleep(200 * time.Millisecond)
		return []*net.MX{{Host: "mx.slow.test.", Pref: 10}}, nil
	}}
	c := &Cache{Resolver: r}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Lookup(ctx, "slow.test"); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTemporary) {
		t.Fatalf("impatient caller: %v", err)
	}
	a, err := c.Lookup(context.Background(), "slow.test")
	if err != nil || a.Hosts[0].Host != "mx.slow.test" {
		t.Fatalf("second caller: %v, %v", a, err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d lookups, want 1", n)
	}
}

func TestPurge(t *testing.T) {
	_, r := startDNS(t)
	now := time.Unix(0, 0)
	c := &Cache{Resolver: r, Now: func() time.Time { return now }}
	c.Lookup(context.Background(), "cname.test")
	now = now.Add(DefaultTTL + time.Second)
	c.Purge()
	if n := c.mx.len(); n != 0 {
		t.Fatalf("%d entries after Purge, want 0", n)
	}
}

// An answer too large for UDP is fetched again over TCP.
func TestTruncatedAnswerRetriesOverTCP(t *testing.T) {
	s, r := startDNS(t)
	for i := range 60 {
		s.Add(fmt.Sprintf("big.test. MX %d a-rather-long-mail-exchanger-name-number-%02d.big.test.", i, i))
	}
	a, err := Resolve(context.Background(), r, "big.test")
	if err != nil || len(a.Hosts) != 60 {
		t.Fatalf("got %d hosts, %v; want 60", len(a.Hosts), err)
	}
	if n := s.Queries("big.test", "MX"); n != 2 {
		t.Fatalf("%d MX queries, want 2 (UDP truncated, then TCP)", n)
	}
}

// MX hosts' addresses are cached like MX answers: a burst of deliveries to
// one host costs one A and one AAAA query.
func TestLookupHostCached(t *testing.T) {
	s, r := startDNS(t)
	s.Host("mx.cached.test", "127.0.0.5", "::1")
	c := &Cache{Resolver: r}
	for range 10 {
		addrs, err := c.LookupHost(context.Background(), "mx.cached.test")
		if err != nil || len(addrs) != 2 {
			t.Fatalf("%v, %v", addrs, err)
		}
	}
	if a, aaaa := s.Queries("mx.cached.test", "A"), s.Queries("mx.cached.test", "AAAA"); a != 1 || aaaa != 1 {
		t.Fatalf("%d A and %d AAAA queries for 10 lookups, want 1 and 1", a, aaaa)
	}
	if _, err := c.LookupHost(context.Background(), "nohost.cached.test"); err == nil {
		t.Fatal("a missing host resolved")
	}
}

// A caller whose context has ended starts no lookup: a loop over hundreds
// of MX hosts that keeps asking after its context is gone sends nothing.
func TestNoLookupAfterContextDone(t *testing.T) {
	var calls atomic.Int32
	r := fakeResolver{mx: func(string) ([]*net.MX, error) {
		calls.Add(1)
		return []*net.MX{{Host: "mx.a.test.", Pref: 10}}, nil
	}}
	c := &Cache{Resolver: r}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 100 {
		if _, err := c.Lookup(ctx, fmt.Sprintf("d%d.test", i)); !errors.Is(err, context.Canceled) {
			t.Fatalf("lookup %d: %v", i, err)
		}
		if _, err := c.LookupHost(ctx, fmt.Sprintf("mx%d.test", i)); !errors.Is(err, context.Canceled) {
			t.Fatalf("host lookup %d: %v", i, err)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d lookups after the context ended, want 0", n)
	}
	// A cached answer is still served to a done context.
	c.Lookup(context.Background(), "d0.test")
	if a, err := c.Lookup(ctx, "d0.test"); err != nil || len(a.Hosts) != 1 {
		t.Fatalf("cached answer: %v, %v", a, err)
	}
}
