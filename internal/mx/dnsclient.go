package mx

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ServerResolver queries one DNS server directly, over UDP with a TCP retry
// when the answer is truncated. It tells NXDOMAIN from NODATA (which the
// system resolver cannot), follows CNAMEs that the server includes in its
// answer, and never consults /etc/resolv.conf or /etc/hosts.
type ServerResolver struct {
	Addr    string        // "127.0.0.1:5353"
	Timeout time.Duration // per exchange; 0 = 5 s
}

var _ Resolver = (*ServerResolver)(nil)

// maxCNAMEChain bounds how many CNAMEs are followed inside one answer.
const maxCNAMEChain = 8

func (r *ServerResolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 5 * time.Second
}

// exchange sends one question and returns the records of type qtype found
// for name (after CNAMEs within the answer). The error is a *net.DNSError.
func (r *ServerResolver) exchange(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn := dns.Fqdn(name)
	q := new(dns.Msg)
	q.SetQuestion(fqdn, qtype)
	q.RecursionDesired = true
	q.SetEdns0(1232, false)

	udp := &dns.Client{Net: "udp", Timeout: r.timeout(), UDPSize: 1232}
	resp, _, err := udp.ExchangeContext(ctx, q, r.Addr)
	if err == nil && resp.Truncated {
		tcp := &dns.Client{Net: "tcp", Timeout: r.timeout()}
		resp, _, err = tcp.ExchangeContext(ctx, q, r.Addr)
	}
	if err != nil {
		return nil, &net.DNSError{
			Err: err.Error(), Name: name, Server: r.Addr,
			IsTimeout: isTimeout(err), IsTemporary: true, UnwrapErr: err,
		}
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: r.Addr, IsNotFound: true, UnwrapErr: ErrNXDOMAIN}
	default:
		return nil, &net.DNSError{Err: "server answered " + dns.RcodeToString[resp.Rcode], Name: name, Server: r.Addr, IsTemporary: true}
	}

	// Follow the CNAME chain inside the answer section.
	owner := strings.ToLower(fqdn)
	for range maxCNAMEChain {
		next := ""
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) {
				next = strings.ToLower(c.Target)
				break
			}
		}
		if next == "" {
			break
		}
		owner = next
	}
	var out []dns.RR
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == qtype && strings.EqualFold(rr.Header().Name, owner) {
			out = append(out, rr)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such record", Name: name, Server: r.Addr, IsNotFound: true}
	}
	return out, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// LookupMX implements Resolver. A null MX comes back as one record with
// Host ".".
func (r *ServerResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.exchange(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		m := rr.(*dns.MX)
		out = append(out, &net.MX{Host: m.Mx, Pref: m.Preference})
	}
	return out, nil
}

// LookupIPAddr implements Resolver: A and AAAA, asked at the same time.
// The name is not found only when neither exists.
func (r *ServerResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	type result struct {
		rrs []dns.RR
		err error
	}
	var aaaa result
	done := make(chan struct{})
	go func() {
		aaaa.rrs, aaaa.err = r.exchange(ctx, host, dns.TypeAAAA)
		close(done)
	}()
	var a result
	a.rrs, a.err = r.exchange(ctx, host, dns.TypeA)
	<-done

	var addrs []net.IPAddr
	var firstErr error
	for _, res := range []result{a, aaaa} {
		if res.err != nil {
			var de *net.DNSError
			if errors.As(res.err, &de) && de.IsNotFound {
				if errors.Is(res.err, ErrNXDOMAIN) {
					return nil, res.err // the name does not exist at all
				}
			} else if firstErr == nil {
				firstErr = res.err
			}
			continue
		}
		for _, rr := range res.rrs {
			switch v := rr.(type) {
			case *dns.A:
				addrs = append(addrs, net.IPAddr{IP: v.A})
			case *dns.AAAA:
				addrs = append(addrs, net.IPAddr{IP: v.AAAA})
			}
		}
	}
	switch {
	case len(addrs) > 0:
		return addrs, nil
	case firstErr != nil:
		return nil, firstErr
	default:
		return nil, &net.DNSError{Err: "no such host", Name: host, Server: r.Addr, IsNotFound: true}
	}
}

// LookupTXT returns the TXT records of name, the strings of each record
// joined into one as net.Resolver does (a DKIM key or an SPF record longer
// than 255 octets is published as several strings of one record).
func (r *ServerResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.exchange(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupAddr returns the names of addr's PTR records (reverse DNS), fully
// qualified with a trailing dot as net.Resolver returns them.
func (r *ServerResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr, Server: r.Addr}
	}
	rrs, err := r.exchange(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, dns.Fqdn(rr.(*dns.PTR).Ptr))
	}
	return out, nil
}
