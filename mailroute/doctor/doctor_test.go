package doctor

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/mailroute/go-mailroute/internal/dkimsign"
	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/mailroute"
)

func testEd25519(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publishDKIM serves s's public key record on dns, split into TXT strings
// of at most 255 octets as a zone file would have it.
func publishDKIM(t testing.TB, dns *dnstest.Server, s mailroute.DKIMSignature) {
	t.Helper()
	rec, err := s.Record()
	if err != nil {
		t.Fatal(err)
	}
	dns.Add(s.RecordName() + ". TXT " + dkimsign.ZoneTXT(rec))
}

// senderDNS serves a sender whose setup is right for both paths:
// example.net sending direct from mail.example.net (192.0.2.1) and through
// Postmark.
func senderDNS(t *testing.T, sig mailroute.DKIMSignature) *dnstest.Server {
	t.Helper()
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	dns.MX("example.net", "mx.example.net").Host("mx.example.net", "192.0.2.10")
	dns.Host("mail.example.net", "192.0.2.1")
	dns.Add("1.2.0.192.in-addr.arpa. PTR mail.example.net.")
	dns.Add(`example.net. TXT "v=spf1 ip4:192.0.2.1 include:spf.mtasv.net -all"`)
	dns.Add(`spf.mtasv.net. TXT "v=spf1 ip4:198.51.100.0/24 -all"`)
	dns.Add(`_dmarc.example.net. TXT "v=DMARC1; p=quarantine"`)
	dns.Host("smtp.postmarkapp.com", "198.51.100.9")
	publishDKIM(t, dns, sig)
	return dns
}

func findingsOf(r *Report, check string, path mailroute.Via) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Check == check && f.Path == path {
			out = append(out, f)
		}
	}
	return out
}

func TestCheckAllGood(t *testing.T) {
	sig := mailroute.DKIMSignature{Domain: "example.net", Selector: "s1", Signer: testEd25519(t)}
	dns := senderDNS(t, sig)
	cfg := mailroute.Config{
		Hostname: "mail.example.net",
		Relay:    &mailroute.Relay{Addr: "smtp.postmarkapp.com:587"},
		DKIM:     []mailroute.DKIMSignature{sig},
		Resolver: mailroute.DNSServer(dns.Addr),
	}
	// The domain comes from the DKIM signature, the address from the EHLO
	// name, the resolver from the Config.
	rep, err := Check(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Domain != "example.net" || rep.Status() != OK {
		t.Errorf("domain %s, status %v:\n%s", rep.Domain, rep.Status(), rep)
	}
	if f := findingsOf(rep, "SPF", mailroute.Relayed); len(f) != 1 || f[0].Found != "include:spf.mtasv.net is there" {
		t.Errorf("relay SPF: %+v", f)
	}
	if f := findingsOf(rep, "reverse DNS", mailroute.Direct); len(f) != 1 || !strings.Contains(f[0].Found, "192.0.2.1 → mail.example.net") {
		t.Errorf("reverse DNS: %+v", f)
	}
	if f := findingsOf(rep, "relay", mailroute.Relayed); len(f) != 2 || f[1].Found != "no known quirks of Postmark" {
		t.Errorf("relay: %+v", f)
	}

	// The same through a Mailer, whose Check uses its own Config.
	m, err := mailroute.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rep2, err := CheckMailer(context.Background(), m, Options{})
	if err != nil || len(rep2.Findings) != len(rep.Findings) || rep2.Status() != OK {
		t.Errorf("CheckMailer: %v\n%s", err, rep2)
	}
}

func TestCheckOptions(t *testing.T) {
	sig := mailroute.DKIMSignature{Domain: "example.net", Selector: "s1", Signer: testEd25519(t)}
	dns := senderDNS(t, sig)
	dns.Add(`provider._domainkey.example.net. TXT "v=DKIM1; k=rsa; p="`)
	ctx := context.Background()

	// A public LocalAddr is the address checked; PublicIPs win over it.
	cfg := mailroute.Config{Hostname: "mail.example.net", Resolver: mailroute.DNSServer(dns.Addr)}
	cfg.Direct.LocalAddr = netip.MustParseAddr("198.51.100.1")
	rep, _ := Check(ctx, cfg, Options{Domain: "example.net"})
	if f := findingsOf(rep, "EHLO name", mailroute.Direct); len(f) != 1 || f[0].Status != Problem || !strings.Contains(f[0].Found, "but mail leaves from 198.51.100.1") {
		t.Errorf("LocalAddr not checked: %+v", f)
	}
	rep, _ = Check(ctx, cfg, Options{Domain: "example.net", PublicIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}})
	if f := findingsOf(rep, "EHLO name", mailroute.Direct); len(f) != 1 || f[0].Status != OK {
		t.Errorf("PublicIPs not used: %+v", f)
	}
	// Each address gets its own reverse DNS and SPF finding.
	if r := findingsOf(rep, "reverse DNS", mailroute.Direct); len(r) != 2 || r[0].Status != OK || r[1].Status != Problem || !strings.Contains(r[1].Found, "2001:db8::1 has no PTR record") {
		t.Errorf("reverse DNS of two addresses: %+v", r)
	}
	if s := findingsOf(rep, "SPF", mailroute.Direct); len(s) != 2 || s[1].Status != Problem || !strings.Contains(s[1].Fix, "ip6:2001:db8::1") {
		t.Errorf("SPF of two addresses: %+v", s)
	}
	// A private LocalAddr is not what receivers see: ignored.
	cfg.Direct.LocalAddr = netip.MustParseAddr("10.0.0.5")
	rep, _ = Check(ctx, cfg, Options{Domain: "example.net"})
	if f := findingsOf(rep, "EHLO name", mailroute.Direct); len(f) != 1 || f[0].Status != OK {
		t.Errorf("private LocalAddr used: %+v", f)
	}

	// NoDirect skips this host's checks; a selector without a key is
	// read, not compared.
	rep, _ = Check(ctx, mailroute.Config{Resolver: mailroute.DNSServer(dns.Addr)}, Options{Domain: "example.net", NoDirect: true, DKIMSelectors: []string{"s1", "provider"}})
	for _, f := range rep.Findings {
		if f.Path == mailroute.Direct {
			t.Errorf("a direct finding with NoDirect: %+v", f)
		}
	}
	dk := findingsOf(rep, "DKIM", 0)
	if len(dk) != 2 || dk[0].Status != OK || !strings.Contains(dk[0].Found, "no signer given") || dk[1].Status != Problem || !strings.Contains(dk[1].Found, "revoked") {
		t.Errorf("DKIM selectors: %+v", dk)
	}

	for _, tt := range []struct {
		opts Options
		want string
	}{
		{Options{}, "no sender domain"},
		{Options{Domain: "bad..domain"}, "Options.Domain"},
		{Options{Domain: "example.net", PublicIPs: []netip.Addr{{}}}, "invalid address"},
	} {
		if _, err := Check(ctx, mailroute.Config{Hostname: "mail.example.net"}, tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Check(%+v): %v, want %q", tt.opts, err, tt.want)
		}
	}
}

func TestReportString(t *testing.T) {
	rep := &Report{Domain: "example.net", Findings: []Finding{
		{Check: "MX", Status: OK, Query: "MX example.net", Found: "MX 10 mx.example.net"},
		{Check: "SPF", Path: mailroute.Direct, Status: Problem, Query: "SPF example.net for 192.0.2.1",
			Found: "192.0.2.1 is not authorised (softfail): receivers see direct mail from it as forged, which is a long sentence",
			Fix:   `Add ip4:192.0.2.1 before the all: "v=spf1 ip4:192.0.2.1 ~all"`},
	}}
	got := rep.String()
	lines := strings.Split(strings.TrimRight(got, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "STATUS") || !strings.Contains(lines[0], "LOOKED UP") || !strings.Contains(lines[0], "FOUND") {
		t.Errorf("header: %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "ok ") || !strings.Contains(lines[1], " both ") || !strings.HasPrefix(lines[2], "problem ") || !strings.Contains(lines[2], " direct ") {
		t.Errorf("rows:\n%s", got)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `→ Add ip4:192.0.2.1 before the all:`) }) {
		t.Errorf("no fix row:\n%s", got)
	}
	// The long finding is wrapped: its end is on a row of its own.
	if !slices.ContainsFunc(lines, func(l string) bool {
		return strings.Contains(l, "long sentence") && !strings.Contains(l, "is not authorised")
	}) {
		t.Errorf("the long finding is not wrapped:\n%s", got)
	}
	if rep.Status() != Problem || Warning.String() != "warning" || Status(9).String() != "Status(9)" {
		t.Error("Status or String")
	}
}

func TestWrap(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"one two three", []string{"one two", "three"}},
		{"averyveryverylongword x", []string{"averyveryverylongword", "x"}},
		{"→ é é é é", []string{"→ é é é", "é"}}, // runes, not octets
	} {
		if got := wrap(tt.in, 7); !slices.Equal(got, tt.want) {
			t.Errorf("wrap(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
