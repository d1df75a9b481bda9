package doctor

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// checkMX: replies and bounces need somewhere to go.
func (r *run) checkMX() {
	d := r.in.Domain
	f := Finding{Check: "MX", Query: "MX " + d}
	mxs, err := r.in.Resolver.LookupMX(r.ctx, d)
	switch {
	case err != nil && notFound(err):
		addrs, aerr := r.in.Resolver.LookupIPAddr(r.ctx, d)
		if aerr == nil && len(addrs) > 0 {
			f.Status = Warning
			f.Found = fmt.Sprintf("no MX record; mail to %s goes to its address %s (the implicit MX)", d, addrs[0].IP)
			f.Fix = fmt.Sprintf("Publish an MX record for the server that receives mail for %s, e.g. %s. MX 10 mx.%s.", d, d, d)
		} else {
			f.Status = Problem
			f.Found = fmt.Sprintf("no MX and no address record: replies and bounces to %s addresses cannot be delivered, and receivers may refuse a sender whose domain cannot receive", d)
			f.Fix = fmt.Sprintf("Publish MX records for %s pointing at a server that receives its mail.", d)
		}
	case err != nil:
		f.Status, f.Found, f.Fix = Warning, lookupFailed(err), retryFix
	case len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == ""):
		f.Status = Problem
		f.Found = fmt.Sprintf("a null MX (RFC 7505): %s declares that it receives no mail, so replies and bounces fail, and receivers may refuse its mail", d)
		f.Fix = fmt.Sprintf("Replace the null MX with MX records for a server that receives mail for %s.", d)
	default:
		slices.SortFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
		var list, dead []string
		for _, m := range mxs {
			host := trimDot(m.Host)
			list = append(list, fmt.Sprintf("%d %s", m.Pref, host))
			if addrs, err := r.in.Resolver.LookupIPAddr(r.ctx, host); err == nil && len(addrs) == 0 || err != nil && notFound(err) {
				dead = append(dead, host)
			}
		}
		f.Found = "MX " + strings.Join(list, ", ")
		switch {
		case len(dead) == len(mxs):
			f.Status = Problem
			f.Found += "; no MX host has an address, so replies and bounces cannot be delivered"
			f.Fix = "Publish A/AAAA records for " + join(dead) + ", or point the MX records at hosts that have them."
		case len(dead) > 0:
			f.Status = Warning
			f.Found += "; " + join(dead) + " has no address"
			f.Fix = "Publish A/AAAA records for " + join(dead) + " or remove those MX records."
		}
	}
	r.add(f)
}

// checkEHLO: the EHLO name must resolve, to the address mail leaves from;
// receivers (Postfix's reject_unknown_helo_hostname, spam filters) check.
func (r *run) checkEHLO() {
	h := r.in.Hostname
	f := Finding{Check: "EHLO name", Path: Direct, Query: "A/AAAA " + h}
	r.ipsGiven = len(r.in.IPs) > 0
	r.ips = slices.Clone(r.in.IPs)
	switch {
	case strings.HasPrefix(h, "["):
		f.Status = Warning
		f.Query = "EHLO " + h
		f.Found = "the EHLO name is an address literal, which many receivers score as a sign of spam"
		f.Fix = "Set Config.Hostname to a name whose A record is your public address and whose PTR names it."
		r.add(f)
		return
	case !strings.Contains(h, ".") || h == "localhost" || strings.HasSuffix(h, ".localdomain") || strings.HasSuffix(h, ".local"):
		f.Status = Problem
		f.Found = fmt.Sprintf("%q is not a fully qualified public host name; receivers refuse or distrust such an EHLO", h)
		f.Fix = "Set Config.Hostname to this host's public name, e.g. mail." + r.in.Domain + ", with an A record pointing at its public address."
		r.add(f)
		return
	}
	addrs, err := r.in.Resolver.LookupIPAddr(r.ctx, h)
	var got []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			got = append(got, ip.Unmap())
		}
	}
	switch {
	case err != nil && !notFound(err):
		f.Status, f.Found, f.Fix = Warning, lookupFailed(err), retryFix
	case len(got) == 0:
		f.Status = Problem
		f.Found = h + " has no A or AAAA record; receivers that check the EHLO name refuse or score down the mail"
		if len(r.in.IPs) > 0 {
			f.Fix = "Publish " + addressRecord(h, r.in.IPs[0]) + "."
		} else {
			f.Fix = "Publish " + h + ". A <your public IPv4 address>."
		}
	default:
		f.Found = h + " has " + addrList(got)
		if !r.ipsGiven {
			r.ips = got
			break
		}
		if !slices.ContainsFunc(r.in.IPs, func(ip netip.Addr) bool { return slices.Contains(got, ip) }) {
			f.Status = Problem
			f.Found += fmt.Sprintf(", but mail leaves from %s", addrList(r.in.IPs))
			f.Fix = fmt.Sprintf("Point %s's A record at %s, or set Config.Hostname to the name of %s.", h, r.in.IPs[0], r.in.IPs[0])
		}
	}
	r.add(f)
}

// addressRecord is the zone-file line publishing ip for name.
func addressRecord(name string, ip netip.Addr) string {
	if ip.Is4() {
		return name + ". A " + ip.String()
	}
	return name + ". AAAA " + ip.String()
}

func addrList(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return join(s)
}

// checkReverse: each sending address needs a PTR whose name resolves back
// to it (Gmail and Microsoft require this forward-confirmed reverse DNS),
// best the EHLO name.
func (r *run) checkReverse() {
	if len(r.ips) == 0 {
		return // the EHLO finding already says why
	}
	h := r.in.Hostname
	for _, ip := range r.ips {
		f := Finding{Check: "reverse DNS", Path: Direct, Query: "PTR " + ip.String()}
		if !r.ipsGiven && (ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified()) {
			f.Status = Warning
			f.Found = fmt.Sprintf("%s (from %s's A record) is not a public address: receivers see the address of your NAT or provider instead, which was not checked", ip, h)
			f.Fix = "Give the public addresses mail leaves from (doctor.Options.PublicIPs) to check their reverse DNS."
			r.add(f)
			continue
		}
		names, err := r.in.Resolver.LookupAddr(r.ctx, ip.String())
		switch {
		case err != nil && !notFound(err):
			f.Status, f.Found, f.Fix = Warning, lookupFailed(err), retryFix
			r.add(f)
			continue
		case len(names) == 0:
			f.Status = Problem
			f.Found = ip.String() + " has no PTR record; Gmail, Microsoft and most receivers refuse or spam-folder mail from such an address"
			f.Fix = fmt.Sprintf("Ask whoever gives you %s (hosting provider or ISP; it is set with them, not in your own zone) to set its reverse DNS to %s.", ip, h)
			r.add(f)
			continue
		}
		var confirmed, unconfirmed []string
		for _, n := range names {
			n = trimDot(strings.ToLower(n))
			addrs, err := r.in.Resolver.LookupIPAddr(r.ctx, n)
			back := false
			for _, a := range addrs {
				if b, ok := netip.AddrFromSlice(a.IP); ok && b.Unmap() == ip {
					back = true
				}
			}
			if err == nil && back {
				confirmed = append(confirmed, n)
			} else {
				unconfirmed = append(unconfirmed, n)
			}
		}
		switch {
		case slices.Contains(confirmed, strings.ToLower(h)):
			f.Found = fmt.Sprintf("%s → %s, which resolves back to %s", ip, h, ip)
		case len(confirmed) > 0:
			f.Status = Warning
			f.Found = fmt.Sprintf("%s → %s, which resolves back (forward-confirmed), but the EHLO name is %s", ip, confirmed[0], h)
			f.Fix = fmt.Sprintf("Have the PTR of %s set to %s, or set Config.Hostname to %s.", ip, h, confirmed[0])
		default:
			f.Status = Problem
			f.Found = fmt.Sprintf("%s → %s, but %s does not resolve back to %s (forward-confirmed reverse DNS fails)", ip, join(unconfirmed), unconfirmed[0], ip)
			f.Fix = fmt.Sprintf("Have the PTR of %s set to %s (which must resolve to %s), or publish %s.", ip, h, ip, addressRecord(unconfirmed[0], ip))
		}
		r.add(f)
	}
}
