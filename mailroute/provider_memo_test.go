package mailroute

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// swapResolver answers MX lookups with whatever host it holds now.
type swapResolver struct {
	mu   sync.Mutex
	host string
}

func (r *swapResolver) set(h string) { r.mu.Lock(); r.host = h; r.mu.Unlock() }

func (r *swapResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return []*net.MX{{Host: r.host + ".", Pref: 10}}, nil
}

func (r *swapResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	return []net.IPAddr{{IP: net.ParseIP("127.0.0.1")}}, nil
}

// providerOf remembers its answer per domain, at no allocation, and
// follows the MX answer when the cache's changes: a domain that moves to
// Google Workspace is counted as Google from then on.
func TestProviderOfFollowsTheMXAnswer(t *testing.T) {
	res := &swapResolver{host: "mx1.site.test"}
	m, err := New(Config{Hostname: "client.test", Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	now := time.Now()
	m.mx.Now = func() time.Time { return now }
	d := &Destination{Domain: "acme.test", cache: m.mx}
	if got := m.providerOf(d); got != "acme.test" {
		t.Errorf("before any lookup: %q, want the domain", got)
	}
	if _, err := d.MX(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := m.providerOf(d); got != "mx1.site.test" {
		t.Errorf("after the lookup: %q, want the MX site", got)
	}
	if n := testing.AllocsPerRun(100, func() { m.providerOf(d) }); n != 0 {
		t.Errorf("%v allocations per providerOf of a domain seen before, want 0", n)
	}
	res.set("aspmx.l.google.com")
	now = now.Add(time.Hour) // the cached answer has expired
	if _, err := d.MX(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := m.providerOf(d); got != "Google" {
		t.Errorf("after the MX moved: %q, want Google", got)
	}
	if got := m.providerOf(&Destination{Domain: "gmail.com", cache: m.mx}); got != "Google" {
		t.Errorf("gmail.com: %q", got)
	}
}
