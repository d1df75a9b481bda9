package dane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Resolver asks a validating resolver the user trusts — a local Unbound,
// say — and believes its AD bit (RFC 4035 §3.2.3, RFC 6840 §5.8). The
// library does not validate DNSSEC itself: the resolver must be on a path
// an attacker cannot touch (loopback), as RFC 7672 §1.3 and Postfix's DANE
// documentation require.
//
// Answers are kept for their TTL, at most MaxCacheTTL, so that a burst of
// messages to one domain asks once: DANE's lookups sit in front of every
// delivery.
type Resolver struct {
	Addr    string        // "127.0.0.1:53"
	Timeout time.Duration // per exchange; 0: 5 s

	mu    sync.Mutex
	cache map[cacheKey]cached
}

// MaxCacheTTL caps how long an answer is kept, whatever its TTL; answers
// without records (authenticated denial) are kept this long too.
const MaxCacheTTL = 5 * time.Minute

// maxCacheEntries bounds the cache; past it, it starts over.
const maxCacheEntries = 10000

type cacheKey struct {
	name  string
	qtype uint16
}

type cached struct {
	a       Answer
	expires time.Time
}

// ErrInsecure means an answer came without the AD bit: the data may be
// forged, so it cannot enable or disable DANE.
var ErrInsecure = errors.New("DNS answer not authenticated by DNSSEC")

// Answer is a lookup's records and whether the validating resolver
// authenticated them (or authenticated their non-existence).
type Answer struct {
	Secure bool
	RRs    []dns.RR
}

func (r *Resolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 5 * time.Second
}

// Query asks for name's records of type qtype with the DO and AD bits set,
// over UDP with a TCP retry when truncated. NXDOMAIN and NODATA are an
// empty Answer, secure when authenticated; SERVFAIL (which is also what a
// validating resolver answers for bogus data) and network failures are
// errors.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (Answer, error) {
	key := cacheKey{strings.ToLower(dns.Fqdn(name)), qtype}
	now := time.Now()
	r.mu.Lock()
	if c, ok := r.cache[key]; ok && now.Before(c.expires) {
		r.mu.Unlock()
		return c.a, nil
	}
	r.mu.Unlock()
	a, ttl, err := r.exchange(ctx, name, qtype)
	if err != nil {
		return Answer{}, err
	}
	r.mu.Lock()
	if r.cache == nil || len(r.cache) >= maxCacheEntries {
		r.cache = make(map[cacheKey]cached)
	}
	r.cache[key] = cached{a: a, expires: now.Add(ttl)}
	r.mu.Unlock()
	return a, nil
}

// exchange asks the resolver, and returns the answer with how long it may
// be kept.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (Answer, time.Duration, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = true
	q.AuthenticatedData = true
	q.SetEdns0(1232, true)
	udp := &dns.Client{Net: "udp", Timeout: r.timeout(), UDPSize: 1232}
	resp, _, err := udp.ExchangeContext(ctx, q, r.Addr)
	if err == nil && resp.Truncated {
		tcp := &dns.Client{Net: "tcp", Timeout: r.timeout()}
		resp, _, err = tcp.ExchangeContext(ctx, q, r.Addr)
	}
	if err != nil {
		return Answer{}, 0, &net.DNSError{Err: err.Error(), Name: name, Server: r.Addr, IsTemporary: true, UnwrapErr: err}
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return Answer{}, 0, &net.DNSError{Err: "server answered " + dns.RcodeToString[resp.Rcode] + " (bogus or unreachable)", Name: name, Server: r.Addr, IsTemporary: true}
	}
	a := Answer{Secure: resp.AuthenticatedData}
	ttl := MaxCacheTTL
	// The records of the type asked, at the name or at the end of a CNAME
	// chain inside the answer; the answer lives as long as its shortest
	// TTL, CNAMEs included.
	for _, rr := range resp.Answer {
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
		if rr.Header().Rrtype == qtype && resp.Rcode == dns.RcodeSuccess {
			a.RRs = append(a.RRs, rr)
		}
	}
	return a, ttl, nil
}

// LookupMX returns a domain's MX hosts, sorted by preference, and whether
// the answer was authenticated. A domain without MX records has none here;
// its implicit MX is the caller's business.
func (r *Resolver) LookupMX(ctx context.Context, domain string) ([]*net.MX, bool, error) {
	a, err := r.Query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, false, err
	}
	out := make([]*net.MX, 0, len(a.RRs))
	for _, rr := range a.RRs {
		m := rr.(*dns.MX)
		out = append(out, &net.MX{Host: m.Mx, Pref: m.Preference})
	}
	slices.SortStableFunc(out, func(x, y *net.MX) int { return int(x.Pref) - int(y.Pref) })
	return out, a.Secure, nil
}

// TLSA is the outcome of a TLSA lookup for one server.
type TLSA struct {
	// Secure: the answer (records, or their absence) was authenticated.
	// Insecure answers must be ignored (RFC 7672 §2.2).
	Secure bool
	// Records are all records found, usable or not.
	Records []*dns.TLSA
}

// LookupTLSA asks for _port._tcp.host's TLSA records (RFC 7672 §2.2).
func (r *Resolver) LookupTLSA(ctx context.Context, host string, port int) (TLSA, error) {
	name := "_" + strconv.Itoa(port) + "._tcp." + strings.TrimSuffix(host, ".")
	a, err := r.Query(ctx, name, dns.TypeTLSA)
	if err != nil {
		return TLSA{}, fmt.Errorf("TLSA lookup of %s: %w", name, err)
	}
	t := TLSA{Secure: a.Secure}
	for _, rr := range a.RRs {
		t.Records = append(t.Records, rr.(*dns.TLSA))
	}
	return t, nil
}
