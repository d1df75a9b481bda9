package doctor

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/dkimsign"
	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/mx"
)

var edKey = func() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

var (
	rsa1024Once sync.Once
	rsa1024     *rsa.PrivateKey
)

func smallRSA() *rsa.PrivateKey {
	rsa1024Once.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			panic(err)
		}
		rsa1024 = k
	})
	return rsa1024
}

func keyTXT(pub crypto.PublicKey) string {
	rec, err := dkimsign.Record(pub)
	if err != nil {
		panic(err)
	}
	return dkimsign.ZoneTXT(rec)
}

// world is the records of a sender whose setup is right for both paths:
// example.net, sending direct from mail.example.net (192.0.2.1) and through
// smtp.relay.example, whose SPF domain is spf.relay.example.
type world struct {
	records map[string]string // a key per record, to replace or drop one
	in      Input
}

func goodWorld() *world {
	return &world{
		records: map[string]string{
			"mx":        "example.net. MX 10 mx.example.net.",
			"mx-a":      "mx.example.net. A 192.0.2.10",
			"ehlo-a":    "mail.example.net. A 192.0.2.1",
			"ptr":       "1.2.0.192.in-addr.arpa. PTR mail.example.net.",
			"spf":       `example.net. TXT "v=spf1 ip4:192.0.2.1 include:spf.relay.example ~all"`,
			"other-txt": `example.net. TXT "google-site-verification=abc"`,
			"relay-spf": `spf.relay.example. TXT "v=spf1 ip4:198.51.100.0/24 -all"`,
			"relay-a":   "smtp.relay.example. A 198.51.100.5",
			"dkim":      "sel._domainkey.example.net. TXT " + keyTXT(edKey.Public()),
			"dmarc":     `_dmarc.example.net. TXT "v=DMARC1; p=reject; rua=mailto:d@example.net"`,
		},
		in: Input{
			Domain:   "example.net",
			Hostname: "mail.example.net",
			IPs:      []netip.Addr{netip.MustParseAddr("192.0.2.1")},
			Relay:    "smtp.relay.example",
			RelaySPF: "spf.relay.example",
			Keys:     []Key{{Domain: "example.net", Selector: "sel", Public: edKey.Public()}},
		},
	}
}

// run serves the world's records and runs the doctor against them.
func (w *world) run(t *testing.T, setup ...func(*dnstest.Server)) []Finding {
	t.Helper()
	s, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, rr := range w.records {
		if rr != "" {
			s.Add(rr)
		}
	}
	for _, f := range setup {
		f(s)
	}
	in := w.in
	in.Resolver = &mx.ServerResolver{Addr: s.Addr, Timeout: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Run(ctx, in)
}

func dump(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  [%v] %s/%d %s | %s | %s\n", f.Status, f.Check, f.Path, f.Query, f.Found, f.Fix)
	}
	return b.String()
}

// expect asserts that a finding of that check and path has the status and
// that its Found and Fix contain the given texts.
func expect(t *testing.T, fs []Finding, check string, p Path, st Status, found, fix string) {
	t.Helper()
	for _, f := range fs {
		if f.Check == check && f.Path == p && f.Status == st && strings.Contains(f.Found, found) && strings.Contains(f.Fix, fix) {
			return
		}
	}
	t.Errorf("no %s finding (path %d, status %d) with %q and fix %q in:\n%s", check, p, st, found, fix, dump(fs))
}

func TestAllGood(t *testing.T) {
	fs := goodWorld().run(t)
	for _, f := range fs {
		if f.Status != OK || f.Fix != "" {
			t.Errorf("not OK: %+v", f)
		}
	}
	expect(t, fs, "MX", Both, OK, "MX 10 mx.example.net", "")
	expect(t, fs, "EHLO name", Direct, OK, "mail.example.net has 192.0.2.1", "")
	expect(t, fs, "reverse DNS", Direct, OK, "192.0.2.1 → mail.example.net, which resolves back to 192.0.2.1", "")
	expect(t, fs, "SPF", Both, OK, "v=spf1 ip4:192.0.2.1 include:spf.relay.example ~all", "")
	expect(t, fs, "SPF", Direct, OK, "192.0.2.1 is authorised (pass)", "")
	expect(t, fs, "SPF", Smarthost, OK, "include:spf.relay.example is there", "")
	expect(t, fs, "DKIM", Both, OK, "publishes the key mailroute signs with (Ed25519 key)", "")
	expect(t, fs, "DMARC", Both, OK, "p=reject: failing mail is refused", "")
	expect(t, fs, "DMARC", Direct, OK, "DKIM aligned (d=example.net), SPF aligned", "")
	expect(t, fs, "DMARC", Smarthost, OK, "DKIM aligned (d=example.net), SPF aligned (example.net's SPF includes the relay): DMARC passes", "")
	expect(t, fs, "relay", Smarthost, OK, "smtp.relay.example has 198.51.100.5", "")
	expect(t, fs, "relay", Smarthost, OK, "not a relay mailroute knows", "")
	if len(fs) != 12 {
		t.Errorf("%d findings:\n%s", len(fs), dump(fs))
	}
}

func TestMX(t *testing.T) {
	w := goodWorld()
	w.records["mx"] = ""
	expect(t, w.run(t), "MX", Both, Problem, "no MX and no address record: replies and bounces to example.net addresses cannot be delivered", "Publish MX records for example.net")

	w = goodWorld()
	w.records["mx"] = "example.net. A 192.0.2.20"
	expect(t, w.run(t), "MX", Both, Warning, "no MX record; mail to example.net goes to its address 192.0.2.20 (the implicit MX)", "example.net. MX 10 mx.example.net.")

	w = goodWorld()
	w.records["mx"] = "example.net. MX 0 ."
	expect(t, w.run(t), "MX", Both, Problem, "a null MX (RFC 7505)", "Replace the null MX")

	w = goodWorld()
	w.records["mx-a"] = ""
	expect(t, w.run(t), "MX", Both, Problem, "no MX host has an address", "Publish A/AAAA records for mx.example.net")

	w = goodWorld()
	expect(t, w.run(t, func(s *dnstest.Server) { s.ServFail("example.net") }), "MX", Both, Warning, "could not tell: the lookup failed", "Run the check again")
}

func TestEHLO(t *testing.T) {
	w := goodWorld()
	w.records["ehlo-a"] = ""
	fs := w.run(t)
	expect(t, fs, "EHLO name", Direct, Problem, "mail.example.net has no A or AAAA record", "Publish mail.example.net. A 192.0.2.1.")
	expect(t, fs, "reverse DNS", Direct, Problem, "does not resolve back to 192.0.2.1", "")

	w = goodWorld()
	w.in.IPs = []netip.Addr{netip.MustParseAddr("203.0.113.9")}
	expect(t, w.run(t), "EHLO name", Direct, Problem, "mail.example.net has 192.0.2.1, but mail leaves from 203.0.113.9", "Point mail.example.net's A record at 203.0.113.9")

	w = goodWorld()
	w.in.Hostname = "localhost"
	expect(t, w.run(t), "EHLO name", Direct, Problem, `"localhost" is not a fully qualified public host name`, "Set Config.Hostname to this host's public name, e.g. mail.example.net")

	w = goodWorld()
	w.in.Hostname = "[192.0.2.1]"
	expect(t, w.run(t), "EHLO name", Direct, Warning, "address literal", "")

	// Without a given address, the EHLO name's addresses are checked, and
	// a private one is called out.
	w = goodWorld()
	w.in.IPs = nil
	fs = w.run(t)
	expect(t, fs, "reverse DNS", Direct, OK, "192.0.2.1 → mail.example.net", "")
	w.records["ehlo-a"] = "mail.example.net. A 192.168.1.10"
	expect(t, w.run(t), "reverse DNS", Direct, Warning, "192.168.1.10 (from mail.example.net's A record) is not a public address", "doctor.Options.PublicIPs")
}

func TestReverseDNS(t *testing.T) {
	w := goodWorld()
	w.records["ptr"] = ""
	expect(t, w.run(t), "reverse DNS", Direct, Problem, "192.0.2.1 has no PTR record", "set its reverse DNS to mail.example.net")

	w = goodWorld()
	w.records["ptr"] = "1.2.0.192.in-addr.arpa. PTR host-1.isp.example."
	expect(t, w.run(t, func(s *dnstest.Server) { s.Host("host-1.isp.example", "192.0.2.1") }),
		"reverse DNS", Direct, Warning, "192.0.2.1 → host-1.isp.example, which resolves back (forward-confirmed), but the EHLO name is mail.example.net", "or set Config.Hostname to host-1.isp.example")

	w = goodWorld()
	w.records["ptr"] = "1.2.0.192.in-addr.arpa. PTR host-1.isp.example."
	expect(t, w.run(t), "reverse DNS", Direct, Problem, "192.0.2.1 → host-1.isp.example, but host-1.isp.example does not resolve back to 192.0.2.1", "host-1.isp.example. A 192.0.2.1")

	w = goodWorld()
	w.in.IPs = []netip.Addr{netip.MustParseAddr("2001:db8::1")}
	w.records["ehlo-a"] = "mail.example.net. AAAA 2001:db8::1"
	w.records["spf"] = `example.net. TXT "v=spf1 ip6:2001:db8::/64 include:spf.relay.example ~all"`
	w.records["ptr"] = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR mail.example.net."
	fs := w.run(t)
	expect(t, fs, "reverse DNS", Direct, OK, "2001:db8::1 → mail.example.net, which resolves back", "")
	expect(t, fs, "SPF", Direct, OK, "2001:db8::1 is authorised (pass)", "")
}

func TestSPF(t *testing.T) {
	w := goodWorld()
	w.records["spf"] = ""
	fs := w.run(t)
	expect(t, fs, "SPF", Both, Problem, "no SPF record", `example.net. TXT "v=spf1 ip4:192.0.2.1 include:spf.relay.example ~all"`)
	expect(t, fs, "DMARC", Direct, OK, "DKIM aligned (d=example.net), SPF could not be told", "")

	w = goodWorld()
	w.records["spf2"] = `example.net. TXT "v=spf1 -all"`
	expect(t, w.run(t), "SPF", Both, Problem, "2 SPF records; receivers treat more than one as an error", "Merge them into one TXT record")

	w = goodWorld()
	w.records["spf"] = `example.net. TXT "v=spf1 ip4:192.0.2.99 include:spf.relay.example ~all"`
	expect(t, w.run(t), "SPF", Direct, Problem, "192.0.2.1 is not authorised (softfail)", `"v=spf1 ip4:192.0.2.99 include:spf.relay.example ip4:192.0.2.1 ~all"`)

	w = goodWorld()
	w.records["spf"] = `example.net. TXT "v=spf1 ip4:192.0.2.1 include:spf.relay.example +all"`
	expect(t, w.run(t), "SPF", Both, Problem, "it ends in +all, which authorises every address on the internet", "End the record with ~all or -all.")

	w = goodWorld()
	w.records["spf"] = `example.net. TXT "v=spf1 ip4:300.1.1.1 include:spf.relay.example ~all"`
	expect(t, w.run(t), "SPF", Both, Problem, "it does not evaluate:", "Correct the record")

	// Eleven nested includes: more lookups than SPF allows.
	w = goodWorld()
	w.records["spf"] = `example.net. TXT "v=spf1 include:l1.example.net ~all"`
	for i := 1; i <= 11; i++ {
		w.records[fmt.Sprint("l", i)] = fmt.Sprintf(`l%d.example.net. TXT "v=spf1 include:l%d.example.net -all"`, i, i+1)
	}
	expect(t, w.run(t), "SPF", Both, Problem, "it needs more than 10 DNS lookups", "")

	// The relay's domain behind a nested include still counts.
	w = goodWorld()
	w.records["spf"] = `example.net. TXT "v=spf1 ip4:192.0.2.1 include:_spf.example.net ~all"`
	w.records["nested"] = `_spf.example.net. TXT "v=spf1 include:spf.relay.example -all"`
	expect(t, w.run(t), "SPF", Smarthost, OK, "include:spf.relay.example is there (through _spf.example.net)", "")

	w = goodWorld()
	w.records["spf"] = `example.net. TXT "v=spf1 ip4:192.0.2.1 ~all"`
	fs = w.run(t)
	expect(t, fs, "SPF", Smarthost, Problem, "include:spf.relay.example is not in example.net's SPF", `"v=spf1 ip4:192.0.2.1 include:spf.relay.example ~all"`)
	expect(t, fs, "DMARC", Smarthost, OK, "DKIM aligned (d=example.net), SPF not aligned: DMARC passes", "")

	w = goodWorld()
	w.in.RelaySPF = ""
	expect(t, w.run(t), "SPF", Smarthost, Warning, "could not tell: mailroute does not know which SPF domain smtp.relay.example uses", "doctor.Options.RelaySPF")
}

func TestDKIM(t *testing.T) {
	w := goodWorld()
	w.records["dkim"] = ""
	fs := w.run(t)
	expect(t, fs, "DKIM", Both, Problem, "no key record at sel._domainkey.example.net", "Publish sel._domainkey.example.net. TXT \"v=DKIM1; k=ed25519; p=")
	// Without DKIM, the relay path has nothing aligned left.
	w.records["spf"] = `example.net. TXT "v=spf1 ip4:192.0.2.1 ~all"`
	expect(t, w.run(t), "DMARC", Smarthost, Problem, "DKIM fails (see DKIM), SPF not aligned: DMARC fails, and p=reject sends this mail to spam or refuses it", "Correct what the DKIM findings say")

	w = goodWorld()
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	w.records["dkim"] = "sel._domainkey.example.net. TXT " + keyTXT(other.Public())
	expect(t, w.run(t), "DKIM", Both, Problem, "publishes an Ed25519 key that is not the key mailroute signs with", "Replace it with sel._domainkey.example.net. TXT")

	w = goodWorld()
	w.records["dkim"] = `sel._domainkey.example.net. TXT "v=DKIM1; k=ed25519; p="`
	expect(t, w.run(t), "DKIM", Both, Problem, "the key is revoked", "")

	w = goodWorld()
	w.records["dkim"] = `sel._domainkey.example.net. TXT "v=DKIM1; k=ed25519; p=AAAA"`
	expect(t, w.run(t), "DKIM", Both, Problem, "the key record does not parse: p= holds 3 octets, an Ed25519 key is 32", "Replace it with sel._domainkey.example.net. TXT")

	w = goodWorld()
	rec, _ := dkimsign.Record(edKey.Public())
	w.records["dkim"] = "sel._domainkey.example.net. TXT " + dkimsign.ZoneTXT(strings.Replace(rec, "k=ed25519;", "k=ed25519; t=y;", 1))
	expect(t, w.run(t), "DKIM", Both, Warning, "t=y (testing)", "Remove t=y")

	w = goodWorld()
	w.in.Keys = []Key{{Domain: "example.net", Selector: "old", Public: smallRSA().Public()}}
	w.records["dkim"] = "old._domainkey.example.net. TXT " + keyTXT(smallRSA().Public())
	expect(t, w.run(t), "DKIM", Both, Warning, "publishes the key mailroute signs with (1024-bit RSA key); under 2048 bits", "Make a 2048-bit key")

	// A selector without a key to compare: its record is only read.
	w = goodWorld()
	w.in.Keys = []Key{{Domain: "example.net", Selector: "sel"}}
	expect(t, w.run(t), "DKIM", Both, OK, "publishes an Ed25519 key (no signer given to compare it with)", "")

	w = goodWorld()
	w.in.Keys = nil
	fs = w.run(t)
	expect(t, fs, "DKIM", Both, Warning, "messages are not signed", "Set Config.DKIM")
	expect(t, fs, "DMARC", Direct, OK, "no DKIM signature, SPF aligned", "")

	// A key for another organisation's domain does not align.
	w = goodWorld()
	w.in.Keys = []Key{{Domain: "esp.example", Selector: "sel", Public: edKey.Public()}}
	w.records["dkim"] = "sel._domainkey.esp.example. TXT " + keyTXT(edKey.Public())
	w.records["spf"] = `example.net. TXT "v=spf1 ~all"`
	expect(t, w.run(t), "DMARC", Direct, Problem, "DKIM not aligned (d=esp.example, relaxed alignment), SPF not aligned: DMARC fails", "Sign with d=example.net")
}

func TestDMARC(t *testing.T) {
	w := goodWorld()
	w.records["dmarc"] = ""
	fs := w.run(t)
	expect(t, fs, "DMARC", Both, Warning, "no DMARC record", `Publish _dmarc.example.net. TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.net"`)
	expect(t, fs, "DMARC", Direct, OK, "DMARC passes (once a DMARC record exists)", "")

	w = goodWorld()
	w.records["dmarc"] = `_dmarc.example.net. TXT "v=DMARC1; p=none"`
	expect(t, w.run(t), "DMARC", Both, OK, "p=none: monitoring only", "")

	w = goodWorld()
	w.records["dmarc2"] = `_dmarc.example.net. TXT "v=DMARC1; p=none"`
	expect(t, w.run(t), "DMARC", Both, Problem, "2 DMARC records at _dmarc.example.net", "Publish exactly one record")

	w = goodWorld()
	w.records["dmarc"] = `_dmarc.example.net. TXT "v=DMARC1; p=sometimes"`
	expect(t, w.run(t), "DMARC", Both, Problem, "the DMARC record does not parse", "")

	// A subdomain sender inherits the organisational domain's record,
	// with its subdomain policy.
	w = goodWorld()
	w.records["dmarc"] = `_dmarc.example.net. TXT "v=DMARC1; p=reject; sp=quarantine"`
	w.records["sub-spf"] = `news.example.net. TXT "v=spf1 ip4:192.0.2.1 ~all"`
	w.records["sub-mx"] = "news.example.net. MX 10 mx.example.net."
	w.in.Domain = "news.example.net"
	w.in.RelaySPF = ""
	fs = w.run(t)
	expect(t, fs, "DMARC", Both, OK, "p=quarantine (from _dmarc.example.net, the organisational domain): failing mail goes to spam", "")
	// Relaxed alignment: d=example.net aligns with news.example.net.
	expect(t, fs, "DMARC", Direct, OK, "DKIM aligned (d=example.net)", "")

	w.records["dmarc"] = `_dmarc.example.net. TXT "v=DMARC1; p=reject; adkim=s"`
	expect(t, w.run(t), "DMARC", Direct, OK, "DKIM not aligned (d=example.net, strict alignment), SPF aligned", "")
}

func TestKnownRelays(t *testing.T) {
	w := goodWorld()
	w.in.Relay = "email-smtp.eu-west-1.amazonaws.com"
	w.in.RelaySPF = ""
	w.records["relay-a"] = "email-smtp.eu-west-1.amazonaws.com. A 198.51.100.7"
	fs := w.run(t)
	expect(t, fs, "relay", Smarthost, OK, "email-smtp.eu-west-1.amazonaws.com has 198.51.100.7 (Amazon SES)", "")
	expect(t, fs, "relay", Smarthost, Problem, "Amazon SES replaces Message-ID and Date; its guide to manual DKIM signing says not to sign them, and your DKIM signatures cover Message-ID and Date: they fail after the relay", "Set DKIMSignature.Headers to DefaultDKIMHeaders() without Message-ID and Date.")
	expect(t, fs, "SPF", Smarthost, OK, "include:amazonses.com is not in example.net's SPF, which is fine: Amazon SES sends with its own bounce address", "")
	expect(t, fs, "DMARC", Smarthost, Problem, "DKIM broken by the relay (see relay), SPF not aligned: DMARC fails", "Stop signing the fields the relay rewrites")

	// Signing without the fields SES rewrites.
	headers := slices.DeleteFunc(slices.Clone(dkimsign.DefaultHeaders), func(h string) bool { return h == "Message-ID" || h == "Date" })
	w.in.Keys[0].Headers = headers
	fs = w.run(t)
	expect(t, fs, "relay", Smarthost, OK, "your signatures do not cover them", "")
	expect(t, fs, "DMARC", Smarthost, OK, "DKIM aligned (d=example.net), SPF not aligned: DMARC passes", "")

	w = goodWorld()
	w.in.Relay, w.in.RelaySPF = "smtp.office365.com", ""
	w.records["relay-a"] = "smtp.office365.com. A 198.51.100.8"
	w.records["spf"] = `example.net. TXT "v=spf1 ip4:192.0.2.1 include:spf.protection.outlook.com -all"`
	fs = w.run(t)
	expect(t, fs, "SPF", Smarthost, OK, "include:spf.protection.outlook.com is there", "")
	expect(t, fs, "relay", Smarthost, Warning, "SendAsDenied", "Send As rights")

	w = goodWorld()
	w.records["relay-a"] = ""
	expect(t, w.run(t), "relay", Smarthost, Problem, "smtp.relay.example does not resolve", "Relay.Addr")
}
