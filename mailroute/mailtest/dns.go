package mailtest

import (
	"github.com/mailroute/go-mailroute/internal/dnstest"
)

// DNS is a real DNS server on loopback (UDP and TCP on one port), for what
// a static Resolver cannot play: a Mailer pointed at it with
// mailroute.DNSServer(d.Addr()) sends real queries, and a DANE test sets
// DirectOptions.DANEResolver to d.Addr() after marking the zone Secure.
// It answers authoritatively for the records it is given and NXDOMAIN for
// every other name. Records may be added while it runs; it is safe for
// concurrent use.
type DNS struct {
	s *dnstest.Server
}

// StartDNS starts a DNS server on 127.0.0.1 on a free port.
func StartDNS() (*DNS, error) {
	s, err := dnstest.Start()
	if err != nil {
		return nil, err
	}
	return &DNS{s: s}, nil
}

// Addr is the server's "127.0.0.1:port".
func (d *DNS) Addr() string { return d.s.Addr }

// Add adds records in zone-file syntax, one per string, e.g.
// "example.com. MX 10 mx.example.com." or
// "_25._tcp.mx.example.com. TLSA 3 1 1 <hex>". It panics on a malformed
// record, since tests write them as literals.
func (d *DNS) Add(records ...string) *DNS { d.s.Add(records...); return d }

// MX publishes the MX hosts of domain, in order (preferences 10, 20, …).
func (d *DNS) MX(domain string, hosts ...string) *DNS { d.s.MX(domain, hosts...); return d }

// Host publishes A and AAAA records for name, one per address.
func (d *DNS) Host(name string, addrs ...string) *DNS { d.s.Host(name, addrs...); return d }

// Secure makes the answers for name and every name below it carry the AD
// bit, as a validating resolver's do for a DNSSEC-signed zone. Nothing is
// signed: the server stands in for the resolver a Mailer trusts.
func (d *DNS) Secure(name string) *DNS { d.s.Secure(name); return d }

// Queries counts the queries of type qtype ("MX", "A", "TLSA", …) received
// for name.
func (d *DNS) Queries(name, qtype string) int { return d.s.Queries(name, qtype) }

// Close stops the server.
func (d *DNS) Close() error { return d.s.Close() }
