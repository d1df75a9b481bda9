package mailroute

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// hostnameSources are where the package-level SendMail's default Mailer
// looks for its EHLO name; fields so that tests can stand in for the
// machine.
type hostnameSources struct {
	hostname   func() (string, error)                                   // os.Hostname
	lookupHost func(ctx context.Context, host string) ([]string, error) // the host's addresses
	lookupAddr func(ctx context.Context, addr string) ([]string, error) // their PTR names
	outbound   func() (netip.Addr, error)                               // the source address of outbound mail
}

var systemHostnameSources = hostnameSources{
	hostname:   os.Hostname,
	lookupHost: net.DefaultResolver.LookupHost,
	lookupAddr: net.DefaultResolver.LookupAddr,
	outbound:   outboundAddr,
}

// deriveHostname finds an EHLO name for a Mailer nobody configured, the
// way `hostname -f` does: the system host name when it is fully
// qualified; else the fully qualified name that the host name's addresses
// map back to (/etc/hosts, then DNS); else the address literal of the
// address outbound mail leaves from, which RFC 5321 §4.1.4 allows when a
// host has no name. how says which, for the one log line.
func deriveHostname(ctx context.Context, src hostnameSources) (name, how string, err error) {
	h, herr := src.hostname()
	if herr == nil {
		if n, err := checkHostname(h); err == nil {
			return n, "the system host name", nil
		}
		if addrs, err := src.lookupHost(ctx, h); err == nil {
			for _, a := range addrs {
				if ip, err := netip.ParseAddr(a); err != nil || ip.IsLoopback() {
					continue
				}
				names, _ := src.lookupAddr(ctx, a)
				for _, n := range names {
					if n, err := checkHostname(strings.TrimSuffix(n, ".")); err == nil {
						return n, "the name of the system host name's address " + a, nil
					}
				}
			}
		}
	}
	if a, err := src.outbound(); err == nil && a.IsValid() && !a.IsLoopback() && !a.IsUnspecified() {
		n, err := checkHostname("[" + literalText(a) + "]")
		if err == nil {
			return n, "the address outbound mail leaves from, as the system host name " + quoteOr(h, herr) + " is not fully qualified", nil
		}
	}
	return "", "", errors.New("mailroute: SendMail's default Mailer found no fully qualified name for this host (the system host name is " +
		quoteOr(h, herr) + "); make a Mailer with New and Config.Hostname")
}

// literalText is an address as it goes between the brackets of an
// address literal (RFC 5321 §4.1.3).
func literalText(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		return "IPv6:" + a.String()
	}
	return a.String()
}

func quoteOr(h string, err error) string {
	if err != nil {
		return "unknown"
	}
	return `"` + h + `"`
}

// outboundAddr returns the local address the system would send from to
// the Internet. Connecting a UDP socket sends nothing: it only asks the
// kernel to choose a route.
func outboundAddr() (netip.Addr, error) {
	c, err := net.Dial("udp", "192.0.2.1:25") // TEST-NET-1: routed like the Internet, never answered
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr(), nil
}

// newDefaultMailer makes the package-level SendMail's Mailer with a
// derived host name and says, once, which name and why, so that nobody
// wonders what their EHLO says.
func newDefaultMailer(src hostnameSources, log *slog.Logger) (*Mailer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	name, how, err := deriveHostname(ctx, src)
	if err != nil {
		return nil, err
	}
	log.Warn("mailroute: SendMail's default Mailer says EHLO " + name + " (" + how + "); make a Mailer with New and Config.Hostname to choose the name")
	return New(Config{Hostname: name})
}
