// Command quickstart shows how mailroute decides, per recipient domain,
// between direct delivery and the smarthost. It is self-contained: a DNS
// server on loopback (in this process) answers for a handful of domains, so
// it runs anywhere with only Go installed.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/mailroute"
)

func main() {
	// A real program would leave Config.Resolver nil (the system resolver);
	// here an in-process DNS server stands in for the world.
	dns, err := dnstest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer dns.Close()
	dns.MX("gmail.com", "gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com")
	dns.MX("acme.example", "aspmx.l.google.com", "alt1.aspmx.l.google.com")  // vanity domain on Google Workspace
	dns.MX("contoso.example", "contoso-example.mail.protection.outlook.com") // company on Microsoft 365
	dns.MX("smallisp.example", "mx1.smallisp.example", "mx2.smallisp.example")
	dns.Host("mx1.smallisp.example", "192.0.2.25")
	dns.NullMX("nomail.example") // RFC 7505: accepts no mail

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Resolver: mailroute.DNSServer(dns.Addr),
		// Router: nil means mailroute.DefaultRouter.
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	ctx := context.Background()
	for _, rcpt := range []string{
		"friend@gmail.com",
		"boss@acme.example",
		"it@contoso.example",
		"pal@smallisp.example",
		"nobody@nomail.example",
	} {
		r, err := m.Route(ctx, rcpt) // a dry run: nothing is sent
		if err != nil {
			fmt.Printf("%-22s → refused\n    why: %v\n", rcpt, err)
			continue
		}
		fmt.Printf("%-22s → %v\n    why: %s\n", rcpt, r.Via, r.Reason)

		// The MX hosts come from the same cache routing used: no new query.
		d, err := m.Destination(rcpt)
		if err != nil {
			log.Fatal(err)
		}
		hosts, err := d.MX(ctx)
		if err != nil {
			log.Fatal(err)
		}
		var names []string
		for _, h := range hosts {
			names = append(names, fmt.Sprintf("%s (%d)", h.Host, h.Pref))
		}
		fmt.Printf("    MX:  %s\n", strings.Join(names, ", "))
	}
	fmt.Printf("\n%d DNS queries answered by the loopback server.\n", dns.TotalQueries())
}
