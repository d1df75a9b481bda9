package mailroute

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/mailroute/go-mailroute/internal/dnstest"
)

// startDNS serves a small world: big providers' own domains, vanity
// domains hosted on them, and ordinary domains.
func startDNS(t testing.TB) *dnstest.Server {
	t.Helper()
	s, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.MX("gmail.com", "gmail-smtp-in.l.google.com")
	s.MX("acme.test", "aspmx.l.google.com", "alt1.aspmx.l.google.com")
	s.MX("newgoogle.test", "smtp.google.com")
	s.MX("contoso.test", "contoso-test.mail.protection.outlook.com")
	s.MX("fabrikam.test", "fabrikam-test.o-v1.mx.microsoft")
	s.MX("aolvanity.test", "mx-aol.mail.gm0.yahoodns.net")
	s.MX("icloudplus.test", "mx01.mail.icloud.com", "mx02.mail.icloud.com")
	s.MX("mixed.test", "aspmx.l.google.com", "mail.mixed.test")
	s.MX("smallisp.test", "mx.smallisp.test")
	s.MX("other.example", "mx.other.example")
	s.MX("notgoogle.test", "mx.notgoogle.com")
	s.MX("evil.test", "google.com.evil.test")
	s.MX("xn--bcher-kva.test", "aspmx.l.google.com")
	s.Host("noMX.test", "192.0.2.10")
	s.NullMX("nullmx.test")
	s.ServFail("servfail.test")
	return s
}

func newTestMailer(t testing.TB, cfg Config) (*Mailer, *dnstest.Server) {
	t.Helper()
	s := startDNS(t)
	cfg.Resolver = DNSServer(s.Addr)
	if cfg.Hostname == "" {
		cfg.Hostname = "mail.sender.test"
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, s
}

func TestDefaultRouter(t *testing.T) {
	m, s := newTestMailer(t, Config{})
	ctx := context.Background()
	tests := []struct {
		in     string
		via    Via
		reason []string // substrings the reason must hold
	}{
		{"friend@gmail.com", Relayed, []string{"gmail.com is a Google mailbox domain"}},
		{"x@GoogleMail.COM.", Relayed, []string{"googlemail.com", "Google"}},
		{"x@hotmail.co.uk", Relayed, []string{"Microsoft mailbox domain"}},
		{"x@aol.com", Relayed, []string{"Yahoo"}},
		{"x@me.com", Relayed, []string{"Apple"}},
		{"boss@acme.test", Relayed, []string{"every MX of acme.test is Google", "aspmx.l.google.com", "alt1.aspmx.l.google.com"}},
		{"newgoogle.test", Relayed, []string{"Google", "smtp.google.com"}},
		{"contoso.test", Relayed, []string{"every MX of contoso.test is Microsoft", "contoso-test.mail.protection.outlook.com"}},
		{"fabrikam.test", Relayed, []string{"Microsoft", "mx.microsoft"}},
		{"aolvanity.test", Relayed, []string{"Yahoo"}},
		{"icloudplus.test", Relayed, []string{"Apple"}},
		{"user@Bücher.test", Relayed, []string{"xn--bcher-kva.test", "Google"}},
		{"mixed.test", Direct, []string{`"*"`}},
		{"smallisp.test", Direct, []string{`"*"`}},
		{"notgoogle.test", Direct, nil},
		{"evil.test", Direct, nil},
		{"nomx.test", Direct, nil},
		{"x@[192.0.2.1]", Direct, []string{"address literal"}},
		{"x@[IPv6:2001:db8::1]", Direct, []string{"address literal"}},
	}
	for _, tt := range tests {
		r, err := m.Route(ctx, tt.in)
		if err != nil {
			t.Errorf("Route(%q): %v", tt.in, err)
			continue
		}
		if r.Via != tt.via {
			t.Errorf("Route(%q) = %v (%s), want %v", tt.in, r.Via, r.Reason, tt.via)
		}
		for _, want := range tt.reason {
			if !strings.Contains(r.Reason, want) {
				t.Errorf("Route(%q).Reason = %q, want it to mention %q", tt.in, r.Reason, want)
			}
		}
	}
	// Mailbox domains are known without DNS.
	if n := s.Queries("gmail.com", "MX"); n != 0 {
		t.Errorf("gmail.com: %d MX queries, want 0 (mailbox domain fast path)", n)
	}
}

func TestRouteDNSFailures(t *testing.T) {
	m, s := newTestMailer(t, Config{})
	ctx := context.Background()
	if _, err := m.Route(ctx, "x@nullmx.test"); !errors.Is(err, ErrNullMX) {
		t.Errorf("null MX: %v, want ErrNullMX", err)
	}
	if _, err := m.Route(ctx, "x@nxdomain.test"); !errors.Is(err, ErrNoSuchDomain) {
		t.Errorf("NXDOMAIN: %v, want ErrNoSuchDomain", err)
	}
	if _, err := m.Route(ctx, "x@servfail.test"); !errors.Is(err, ErrDNSTemporary) || errors.Is(err, ErrNoSuchDomain) {
		t.Errorf("SERVFAIL: %v, want ErrDNSTemporary only", err)
	}
	// Literals never touch DNS.
	before := s.TotalQueries()
	m.Route(ctx, "x@[192.0.2.1]")
	if s.TotalQueries() != before {
		t.Errorf("an address literal caused a DNS query")
	}
}

func TestRouteBadInput(t *testing.T) {
	m, s := newTestMailer(t, Config{})
	for _, in := range []string{
		"", "user@", "@", "a..b", "exa mple.com", "x@exa_mple.com", "x@example.com\r\nRCPT TO:<y@z>",
		"x@exam\x00ple.com", "x@" + strings.Repeat("a", 64) + ".com", "x@" + strings.Repeat("abcd.", 51) + "com",
		"x@[192.0.2.1", "x@[2001:db8::1]", "x@-bad.com", "x@<evil>.com",
	} {
		r, err := m.Route(context.Background(), in)
		if err == nil {
			t.Errorf("Route(%q) = %+v, want an error", in, r)
			continue
		}
		if !strings.Contains(err.Error(), "invalid domain") {
			t.Errorf("Route(%q): error %q does not say the domain is invalid", in, err)
		}
	}
	if n := s.TotalQueries(); n != 0 {
		t.Errorf("bad input caused %d DNS queries", n)
	}
}

func TestRulesOrderAndPatterns(t *testing.T) {
	rules := Rules{
		{Domains: []string{"vip.smallisp.test"}, Via: Relayed},
		{Domains: []string{".smallisp.test"}, Via: Direct},
		{Providers: []Provider{Google}, Via: Relayed},
		{Domains: []string{".test"}, Via: Direct},
	}
	m, _ := newTestMailer(t, Config{Router: rules})
	tests := []struct {
		domain string
		via    Via
		reason string
	}{
		{"vip.smallisp.test", Relayed, `rule 1 matches "vip.smallisp.test"`},
		{"smallisp.test", Direct, `rule 2 matches ".smallisp.test"`},
		{"a.b.smallisp.test", Direct, `rule 2`},
		{"acme.test", Relayed, `rule 3: every MX of acme.test is Google`},
		{"gmail.com", Relayed, `gmail.com is a Google mailbox domain (rule 3)`},
		{"contoso.test", Direct, `rule 4 matches ".test"`},
	}
	for _, tt := range tests {
		for _, router := range []Router{m.router, rules} { // compiled and plain
			d, _ := m.destination(tt.domain)
			r, err := router.Route(context.Background(), d)
			if err != nil || r.Via != tt.via || !strings.Contains(r.Reason, tt.reason) {
				t.Errorf("%T %s: %+v, %v; want %v %q", router, tt.domain, r, err, tt.via, tt.reason)
			}
		}
	}
	if _, err := m.Route(context.Background(), "other.example"); !errors.Is(err, ErrNoRoute) {
		t.Errorf("no rule matches other.example: err = %v, want ErrNoRoute", err)
	}
}

func TestRulesValidation(t *testing.T) {
	bad := []struct {
		rules Rules
		want  string
	}{
		{Rules{{Domains: []string{"gmail.com"}}}, "Via must be Direct or Relayed"},
		{Rules{{Via: Direct}}, "matches nothing"},
		{Rules{{Domains: []string{"*.example.com"}, Via: Direct}}, `"*.example.com"`},
		{Rules{{Domains: []string{"a..b"}, Via: Direct}}, `"a..b"`},
		{Rules{{Providers: []Provider{{Name: "X"}}, Via: Direct}}, "neither Domains nor MXSuffixes"},
		{Rules{{Providers: []Provider{{Name: "X", MXSuffixes: []string{"bad suffix"}}}, Via: Direct}}, `"bad suffix"`},
		{Rules{{Providers: []Provider{{Domains: []string{"x.com"}}}, Via: Direct}}, "Name"},
	}
	for _, tt := range bad {
		_, err := New(Config{Hostname: "mail.sender.test", Router: tt.rules})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New with %+v: err = %v, want it to mention %s", tt.rules, err, tt.want)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	bad := []struct {
		cfg  Config
		want string
	}{
		{Config{Hostname: "bad host"}, "Hostname"},
		{Config{Hostname: "mail.example.com\r\n"}, "Hostname"},
		{Config{}, "Hostname is empty"},
		{Config{Hostname: "vm"}, "not a fully qualified"},
		{Config{Hostname: "localhost"}, "not a fully qualified"},
		{Config{Hostname: "LocalHost."}, "not a fully qualified"},
		{Config{Hostname: "localhost.localdomain"}, "not a fully qualified"},
		{Config{Hostname: "app.localhost"}, "not a fully qualified"},
		{Config{Hostname: "mail.example.com", Direct: DirectOptions{Port: 70000}}, "Port"},
		{Config{Hostname: "mail.example.com", Direct: DirectOptions{DANEResolver: "127.0.0.1"}}, "DANEResolver"},
		{Config{Hostname: "mail.example.com", Relay: &Relay{Addr: "smtp.example.com"}}, "host:port"},
		{Config{Hostname: "mail.example.com", Relay: &Relay{Addr: "smtp.example.com:http"}}, "bad port"},
		{Config{Hostname: "mail.example.com", Relay: &Relay{Addr: ":587"}}, "no host"},
	}
	for _, tt := range bad {
		if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v): err = %v, want it to mention %q", tt.cfg, err, tt.want)
		}
	}
	if _, err := New(Config{Hostname: "[192.0.2.1]"}); err != nil {
		t.Errorf("address literal host name: %v", err)
	}
}

func TestChain(t *testing.T) {
	m, _ := newTestMailer(t, Config{})
	pass := RouterFunc(func(context.Context, *Destination) (Route, error) { return Route{}, nil })
	vip := Rules{{Domains: []string{"vip.test"}, Via: Relayed}}
	chain := Chain(pass, vip, DefaultRouter)
	for domain, want := range map[string]Via{"vip.test": Relayed, "smallisp.test": Direct, "acme.test": Relayed} {
		d, _ := m.destination(domain)
		r, err := chain.Route(context.Background(), d)
		if err != nil || r.Via != want {
			t.Errorf("Chain %s: %+v, %v; want %v", domain, r, err, want)
		}
	}
	d, _ := m.destination("other.test")
	if _, err := Chain(pass, vip).Route(context.Background(), d); !errors.Is(err, ErrNoRoute) {
		t.Errorf("nobody decided: %v, want ErrNoRoute", err)
	}
	boom := errors.New("boom")
	failing := RouterFunc(func(context.Context, *Destination) (Route, error) { return Route{}, boom })
	if _, err := Chain(failing, DefaultRouter).Route(context.Background(), d); !errors.Is(err, boom) {
		t.Errorf("a router's error must stop the chain: %v", err)
	}
}

func TestRouterWithoutDecisionIsAnError(t *testing.T) {
	m, _ := newTestMailer(t, Config{Router: RouterFunc(func(context.Context, *Destination) (Route, error) { return Route{}, nil })})
	if _, err := m.Route(context.Background(), "smallisp.test"); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("err = %v, want ErrNoRoute", err)
	}
}

// 1,000 concurrent Route calls for one uncached domain: one DNS query.
func TestConcurrentRouteOneQuery(t *testing.T) {
	m, s := newTestMailer(t, Config{})
	var wg sync.WaitGroup
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.Route(context.Background(), "someone@acme.test")
			if err != nil || r.Via != Relayed {
				t.Errorf("%+v, %v", r, err)
			}
		}()
	}
	wg.Wait()
	if n := s.TotalQueries(); n != 1 {
		t.Fatalf("%d DNS queries for 1,000 concurrent routes of one domain, want 1", n)
	}
}

func TestDestinationMX(t *testing.T) {
	s := startDNS(t)
	d, err := NewDestination("Acme.Test.", DNSServer(s.Addr))
	if err != nil {
		t.Fatal(err)
	}
	if d.Domain != "acme.test" {
		t.Fatalf("Domain = %q", d.Domain)
	}
	hosts, err := d.MX(context.Background())
	if err != nil || len(hosts) != 2 || hosts[0].Host != "aspmx.l.google.com" {
		t.Fatalf("MX = %v, %v", hosts, err)
	}
	lit, err := NewDestination("[192.0.2.1]", nil)
	if err != nil || !lit.IsLiteral() {
		t.Fatalf("literal: %+v, %v", lit, err)
	}
	hosts, _ = lit.MX(context.Background())
	if len(hosts) != 1 || hosts[0].Host != "192.0.2.1" {
		t.Fatalf("literal MX = %v", hosts)
	}
	if _, err := NewDestination("bad domain", nil); err == nil {
		t.Fatal("bad domain accepted")
	}
}

// A decision from the rules costs no allocation (the benchmarks give the
// time; the count is exact, so it is asserted).
func TestRouteRuleHitDoesNotAllocate(t *testing.T) {
	m, _ := newTestMailer(t, Config{})
	ctx := context.Background()
	m.Route(ctx, "smallisp.test") // warm the MX cache for the second case
	for _, addr := range []string{"friend@gmail.com", "friend@smallisp.test"} {
		if n := testing.AllocsPerRun(100, func() { m.Route(ctx, addr) }); n != 0 {
			t.Errorf("Route(%q) allocates %v times, want 0", addr, n)
		}
	}
}
