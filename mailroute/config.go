package mailroute

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Config configures a Mailer. The zero value of every field means its
// documented default.
type Config struct {
	// Hostname is the name this host gives in EHLO when delivering direct:
	// a fully qualified name whose address has a matching PTR record. Empty:
	// the system's host name.
	Hostname string
	// Router decides each destination's route. nil: DefaultRouter.
	Router Router
	// Smarthost is the relay for Smarthost routes and fallback. nil: none,
	// and mail routed to the smarthost fails with a clear error.
	Smarthost *Relay
	// Direct configures delivery to MX hosts.
	Direct DirectOptions
	// Resolver answers MX and address lookups. nil: the system resolver.
	// DNSServer("127.0.0.1:5353") asks one given server.
	Resolver Resolver
	// MXCacheTTL is how long MX answers (and permanent failures such as
	// NXDOMAIN) are kept. 0: 5 minutes; negative: not cached.
	MXCacheTTL time.Duration
	// MXCacheTemporaryTTL is how long temporary lookup failures are kept.
	// 0: 30 seconds; negative: not cached.
	MXCacheTemporaryTTL time.Duration
}

// DirectOptions configures delivery to MX hosts.
type DirectOptions struct {
	// Port is the SMTP port of every MX host. 0: 25.
	Port int
	// LocalAddr is the source address to send from, for hosts with several.
	// The zero value lets the system choose.
	LocalAddr netip.Addr
}

func (o DirectOptions) check() error {
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("mailroute: DirectOptions.Port %d is not a port number", o.Port)
	}
	return nil
}

// Relay describes the smarthost.
type Relay struct {
	// Addr is "host:port". Port 465 means implicit TLS; any other port
	// STARTTLS, which is then required.
	Addr string
	// ImplicitTLS forces implicit TLS on a port other than 465.
	ImplicitTLS bool
	// Username and Password authenticate to the relay. They are only ever
	// sent over a verified TLS connection.
	Username, Password string
	// TLSConfig is used for the relay's TLS. nil: the system roots, verified
	// against the host in Addr.
	TLSConfig *tls.Config
}

func (r *Relay) check() error {
	host, port, err := net.SplitHostPort(r.Addr)
	if err != nil {
		return fmt.Errorf("mailroute: Relay.Addr %q: want host:port: %w", r.Addr, err)
	}
	if host == "" {
		return fmt.Errorf("mailroute: Relay.Addr %q has no host", r.Addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("mailroute: Relay.Addr %q: bad port %q", r.Addr, port)
	}
	return nil
}
