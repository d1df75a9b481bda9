package mailroute_test

import (
	"context"
	"fmt"
	"net"

	"github.com/mailroute/go-mailroute/mailroute"
)

// staticDNS is a Resolver answering from a map, as a test or an example
// might use; real programs leave Config.Resolver nil.
type staticDNS map[string][]*net.MX

func (s staticDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if mx, ok := s[name]; ok {
		return mx, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (s staticDNS) LookupIPAddr(_ context.Context, name string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

var exampleDNS = staticDNS{
	"acme.example":     {{Host: "aspmx.l.google.com.", Pref: 1}, {Host: "alt1.aspmx.l.google.com.", Pref: 5}},
	"contoso.example":  {{Host: "contoso-example.mail.protection.outlook.com.", Pref: 0}},
	"smallisp.example": {{Host: "mx.smallisp.example.", Pref: 10}},
}

// The default router sends the big providers through the relay,
// recognising them by mailbox domain or by MX host, and everything else
// direct.
func ExampleDefaultRouter() {
	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Resolver: exampleDNS, // nil in real programs: the system resolver
	})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	for _, rcpt := range []string{"friend@gmail.com", "boss@acme.example", "it@contoso.example", "pal@smallisp.example"} {
		r, err := m.Route(context.Background(), rcpt)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%-22s %-9v %s\n", rcpt, r.Via, r.Reason)
	}
	// Output:
	// friend@gmail.com       relay     gmail.com is a Google mailbox domain (rule 1)
	// boss@acme.example      relay     rule 1: every MX of acme.example is Google (aspmx.l.google.com, alt1.aspmx.l.google.com)
	// it@contoso.example     relay     rule 1: every MX of contoso.example is Microsoft (contoso-example.mail.protection.outlook.com)
	// pal@smallisp.example   direct    rule 2 matches any domain ("*")
}

// Rules are tried in order and the first match decides. Here a partner
// that rejects the relay's IPs gets direct mail, the big providers and a
// Mimecast-protected customer base go through the relay, and the rest is
// direct.
func ExampleRules() {
	rules := mailroute.Rules{
		{Domains: []string{"partner.example", ".partner.example"}, Via: mailroute.Direct},
		{Providers: append(mailroute.BigProviders, mailroute.Mimecast), Via: mailroute.Relayed},
		{Domains: []string{"*"}, Via: mailroute.Direct},
	}
	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Router:   rules,
		Resolver: exampleDNS,
	})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	for _, rcpt := range []string{"a@eu.partner.example", "b@outlook.com", "c@smallisp.example"} {
		r, _ := m.Route(context.Background(), rcpt)
		fmt.Printf("%s: %v (%s)\n", rcpt, r.Via, r.Reason)
	}
	// Output:
	// a@eu.partner.example: direct (rule 1 matches ".partner.example")
	// b@outlook.com: relay (outlook.com is a Microsoft mailbox domain (rule 2))
	// c@smallisp.example: direct (rule 3 matches any domain ("*"))
}
