// Package mx resolves where mail for a domain goes (RFC 5321 §5.1) and keeps
// the answers in a cache shared by routing and delivery.
//
// The rules implemented:
//   - MX records are sorted by preference; hosts of equal preference are
//     shuffled on every call, so load spreads as §5.1 asks.
//   - No MX record but the domain has an address (NODATA, or a resolver
//     that reports "not found" for the MX query): the implicit MX is the
//     domain itself, preference 0.
//   - Neither MX nor address: the domain does not exist, a permanent error.
//   - A null MX ("0 .", RFC 7505): the domain accepts no mail, a permanent
//     error, and nothing is ever dialled.
//   - SERVFAIL, timeouts and other resolver trouble: a temporary error.
package mx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
)

// Resolver is what the package needs from DNS. *net.Resolver satisfies it.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Sentinel errors; every error from Lookup wraps exactly one of them.
var (
	// ErrNullMX: the domain publishes a null MX (RFC 7505) and accepts no mail.
	ErrNullMX = errors.New("domain accepts no mail (null MX, RFC 7505)")
	// ErrNoSuchDomain: the domain has neither MX records nor addresses.
	ErrNoSuchDomain = errors.New("domain has no MX and no address records")
	// ErrTemporary: the lookup failed in a way that may pass (SERVFAIL,
	// timeout, network trouble); try again later.
	ErrTemporary = errors.New("temporary DNS failure")
)

// ErrNXDOMAIN may be wrapped (as net.DNSError.UnwrapErr) by resolvers that can
// tell NXDOMAIN from NODATA; Lookup then skips the address query, since a
// name that does not exist has no addresses either.
var ErrNXDOMAIN = errors.New("NXDOMAIN")

// Error is a failed lookup. It wraps one of the sentinels and, when there is
// one, the resolver's own error.
type Error struct {
	Domain string
	Kind   error // ErrNullMX, ErrNoSuchDomain or ErrTemporary
	Cause  error // the resolver's error, if any
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("MX lookup for %s: %v: %v", e.Domain, e.Kind, e.Cause)
	}
	return fmt.Sprintf("MX lookup for %s: %v", e.Domain, e.Kind)
}

// Unwrap exposes both the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Cause}
}

// Temporary reports whether retrying later may succeed.
func (e *Error) Temporary() bool { return e.Kind == ErrTemporary }

// Answer is the outcome of a successful lookup.
type Answer struct {
	// Hosts sorted by preference (the cache keeps them unshuffled; Shuffled
	// returns a fresh copy in delivery order).
	Hosts []*net.MX
	// Implicit is true when the domain has no MX and its own address is
	// used (RFC 5321 §5.1).
	Implicit bool
}

// Resolve performs one uncached lookup of a normalised domain.
func Resolve(ctx context.Context, r Resolver, domain string) (Answer, error) {
	records, err := r.LookupMX(ctx, domain)
	if err != nil {
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			return Answer{}, &Error{Domain: domain, Kind: ErrTemporary, Cause: err}
		}
		if errors.Is(err, ErrNXDOMAIN) {
			return Answer{}, &Error{Domain: domain, Kind: ErrNoSuchDomain, Cause: err}
		}
		return implicitMX(ctx, r, domain)
	}
	hosts := make([]*net.MX, 0, len(records))
	nullMX := false
	for _, rec := range records {
		if rec == nil {
			continue
		}
		host := strings.ToLower(strings.TrimSuffix(rec.Host, "."))
		if host == "" {
			nullMX = true
			continue
		}
		hosts = append(hosts, &net.MX{Host: host, Pref: rec.Pref})
	}
	switch {
	case len(hosts) == 0 && nullMX:
		return Answer{}, &Error{Domain: domain, Kind: ErrNullMX}
	case len(hosts) == 0:
		// An empty answer without error is NODATA by another name.
		return implicitMX(ctx, r, domain)
	}
	// A "." beside real hosts is a misconfiguration RFC 7505 §3 says to
	// ignore in favour of the real hosts; they were kept above.
	slices.SortStableFunc(hosts, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return Answer{Hosts: hosts}, nil
}

func implicitMX(ctx context.Context, r Resolver, domain string) (Answer, error) {
	addrs, err := r.LookupIPAddr(ctx, domain)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return Answer{}, &Error{Domain: domain, Kind: ErrNoSuchDomain, Cause: err}
		}
		return Answer{}, &Error{Domain: domain, Kind: ErrTemporary, Cause: err}
	}
	if len(addrs) == 0 {
		return Answer{}, &Error{Domain: domain, Kind: ErrNoSuchDomain}
	}
	return Answer{Hosts: []*net.MX{{Host: domain, Pref: 0}}, Implicit: true}, nil
}
