package doctor_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log"
	"net/netip"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/doctor"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

// Check a sender setup that is half right: the DNS here runs in-process;
// a real program leaves Resolver nil and gives its real public address.
func ExampleCheck() {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)) // a real key comes from a file or a KMS
	sig := mailroute.DKIMSignature{Domain: "example.net", Selector: "2025a", Signer: key}
	record, _ := sig.Record()

	dns := &mailtest.Resolver{
		MX: map[string][]string{"example.net": {"mx.example.net"}},
		Hosts: map[string][]string{
			"mx.example.net":                     {"192.0.2.10"},
			"mail.example.net":                   {"192.0.2.1"},
			"host-1.isp.example":                 {"192.0.2.1"},
			"email-smtp.eu-west-1.amazonaws.com": {"198.51.100.7"},
		},
		PTR: map[string][]string{"192.0.2.1": {"host-1.isp.example."}}, // the provider's name, not ours
		TXT: map[string][]string{
			"example.net":    {"v=spf1 ip4:192.0.2.1 include:amazonses.com ~all"},
			sig.RecordName(): {record},
			// No DMARC record.
		},
	}

	cfg := mailroute.Config{
		Hostname: "mail.example.net",
		Relay:    &mailroute.Relay{Addr: "email-smtp.eu-west-1.amazonaws.com:587"},
		DKIM:     []mailroute.DKIMSignature{sig},
		Resolver: dns,
	}
	report, err := doctor.Check(context.Background(), cfg, doctor.Options{
		PublicIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range report.Findings {
		path := "both paths"
		if f.Path != 0 {
			path = f.Path.String()
		}
		if f.Status != doctor.OK {
			fmt.Printf("%s: %s (%s): %s\n", f.Status, f.Check, path, f.Found)
		}
	}
	fmt.Println("overall:", report.Status())
	// Output:
	// warning: reverse DNS (direct): 192.0.2.1 → host-1.isp.example, which resolves back (forward-confirmed), but the EHLO name is mail.example.net
	// warning: DMARC (both paths): no DMARC record: receivers have no policy for mail failing SPF and DKIM, and Gmail and Yahoo require one from bulk senders
	// problem: DMARC (relay): DKIM broken by the relay (see relay), SPF not aligned: DMARC fails
	// problem: relay (relay): Amazon SES replaces Message-ID and Date; its guide to manual DKIM signing says not to sign them, and your DKIM signatures cover Message-ID and Date: they fail after the relay
	// overall: problem
}
