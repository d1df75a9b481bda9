package mailtest

import (
	"context"
	"net"
	"net/netip"
	"strings"
)

// Resolver is a static DNS for mailroute's Config.Resolver (and
// CheckOptions.Resolver: it answers TXT and PTR lookups too), answering
// from its maps with no network at all. Names are matched without
// regard to case or a trailing dot. A name in neither map does not exist
// (NXDOMAIN); a domain only in Hosts has no MX and receives mail at its
// own address (the implicit MX of RFC 5321 §5.1); an MX list of "."
// alone is a null MX (RFC 7505): the domain takes no mail.
//
// Fill the maps before a Mailer uses the Resolver and leave them alone
// afterwards: lookups read them without locking.
type Resolver struct {
	// MX maps a domain to its MX host names, most preferred first.
	MX map[string][]string
	// Hosts maps a host name to its IP addresses.
	Hosts map[string][]string
	// TXT maps a name to its TXT records (SPF, DKIM keys, DMARC), one
	// string per record.
	TXT map[string][]string
	// PTR maps an IP address to its reverse DNS names.
	PTR map[string][]string
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func (r *Resolver) lookup(m map[string][]string, name string) ([]string, bool) {
	name = canonical(name)
	for k, v := range m {
		if canonical(k) == name {
			return v, true
		}
	}
	return nil, false
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// LookupMX returns the domain's MX hosts with preferences 10, 20, … in
// the order given.
func (r *Resolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	hosts, ok := r.lookup(r.MX, name)
	if !ok {
		return nil, notFound(name)
	}
	out := make([]*net.MX, len(hosts))
	for i, h := range hosts {
		if h == "." {
			out[i] = &net.MX{Host: ".", Pref: 0}
			continue
		}
		out[i] = &net.MX{Host: h, Pref: uint16(10 * (i + 1))}
	}
	return out, nil
}

// LookupIPAddr returns the host's addresses.
func (r *Resolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	addrs, ok := r.lookup(r.Hosts, host)
	if !ok || len(addrs) == 0 {
		return nil, notFound(host)
	}
	out := make([]net.IPAddr, 0, len(addrs))
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return nil, &net.DNSError{Err: "bad address " + a + " in mailtest.Resolver.Hosts", Name: host}
		}
		out = append(out, net.IPAddr{IP: ip.AsSlice()})
	}
	return out, nil
}

// LookupTXT returns the name's TXT records.
func (r *Resolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	txt, ok := r.lookup(r.TXT, name)
	if !ok || len(txt) == 0 {
		return nil, notFound(name)
	}
	return txt, nil
}

// LookupAddr returns the reverse DNS names of an address.
func (r *Resolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	for k, names := range r.PTR {
		if k2, err := netip.ParseAddr(k); err == nil && k2 == a && len(names) > 0 {
			return names, nil
		}
	}
	return nil, notFound(addr)
}
