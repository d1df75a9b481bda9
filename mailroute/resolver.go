package mailroute

import (
	"context"
	"net"

	"github.com/mailroute/go-mailroute/internal/mx"
)

// Resolver is the DNS the Mailer uses for MX and address lookups; nil in
// Config means the system resolver. *net.Resolver satisfies it, and so does
// DNSServer. Errors should be *net.DNSError, with IsNotFound set for names
// or records that do not exist, so that missing MX records (implicit MX) and
// missing domains are told apart from temporary failures.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// DNSServer returns a Resolver that asks one DNS server directly, e.g.
// DNSServer("127.0.0.1:5353"), over UDP with a TCP retry for truncated
// answers. Unlike the system resolver it tells NXDOMAIN from a name without
// MX records, and it never reads /etc/resolv.conf or /etc/hosts.
func DNSServer(addr string) Resolver {
	return &mx.ServerResolver{Addr: addr}
}

// Errors of MX resolution, for errors.Is.
var (
	// ErrNullMX means the domain publishes a null MX (RFC 7505): it accepts
	// no mail. Permanent; nothing is ever sent to it.
	ErrNullMX = mx.ErrNullMX
	// ErrNoSuchDomain means the domain has neither MX nor address records
	// (NXDOMAIN). Permanent.
	ErrNoSuchDomain = mx.ErrNoSuchDomain
	// ErrDNSTemporary means the lookup failed in a way that may pass:
	// SERVFAIL, a timeout, an unreachable server.
	ErrDNSTemporary = mx.ErrTemporary
)

func resolverOrDefault(r Resolver) mx.Resolver {
	if r == nil {
		return net.DefaultResolver
	}
	return r
}
