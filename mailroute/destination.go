package mailroute

import (
	"context"
	"net"
	"net/netip"

	"github.com/mailroute/go-mailroute/internal/mx"
)

// Destination is one recipient domain as the Mailer sees it. The Mailer
// makes one per domain and shares it between routing and delivery, so the
// MX hosts a Router looks at are the ones mail is then sent to, from one
// lookup and one cache.
type Destination struct {
	// Domain is the normalised domain: lower case, A-labels, no trailing
	// dot. For an address literal it is the literal, e.g. "[192.0.2.1]".
	Domain string
	// Literal is the address of an address-literal destination
	// ("user@[192.0.2.1]"); the zero Addr for a domain.
	Literal netip.Addr

	cache *mx.Cache
}

// NewDestination returns the destination for a domain or address literal,
// resolving MX through r (nil: the system resolver) without a cache. It is
// meant for testing a Router; the Mailer makes its own, cached ones.
func NewDestination(domain string, r Resolver) (*Destination, error) {
	d, err := parseDestination(domain)
	if err != nil {
		return nil, err
	}
	d.cache = &mx.Cache{Resolver: resolverOrDefault(r), TTL: -1, TemporaryTTL: -1}
	return &d, nil
}

// IsLiteral reports whether the destination is an address literal.
func (d *Destination) IsLiteral() bool { return d.Literal.IsValid() }

// MX returns the domain's mail exchangers in delivery order: by preference,
// equal preferences shuffled (RFC 5321 §5.1). A domain without MX records but
// with an address yields the domain itself (the implicit MX). Errors wrap
// ErrNullMX, ErrNoSuchDomain or ErrDNSTemporary. The slice is the caller's.
// For an address literal the one "MX" is the address itself.
func (d *Destination) MX(ctx context.Context) ([]*net.MX, error) {
	if d.IsLiteral() {
		return []*net.MX{{Host: d.Literal.String()}}, nil
	}
	a, err := d.mxCache().Lookup(ctx, d.Domain)
	if err != nil {
		return nil, err
	}
	return a.Hosts, nil
}

// answer is MX without the copy, for the Mailer's own read-only use.
func (d *Destination) answer(ctx context.Context) (mx.Answer, error) {
	return d.mxCache().Peek(ctx, d.Domain)
}

// uncachedSystem serves Destinations built by hand (&Destination{Domain: …}).
var uncachedSystem = &mx.Cache{Resolver: net.DefaultResolver, TTL: -1, TemporaryTTL: -1}

func (d *Destination) mxCache() *mx.Cache {
	if d.cache != nil {
		return d.cache
	}
	return uncachedSystem
}
