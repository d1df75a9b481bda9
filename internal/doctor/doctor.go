// Package doctor checks a sender's DNS setup for the two delivery paths
// mailroute uses: direct (this host's address and EHLO name) and the
// relay (a server sending on the domain's behalf). It only reads DNS:
// nothing is sent.
//
// The checks, in report order:
//
//   - MX: the sender domain can receive replies and bounces (RFC 5321 §5.1,
//     RFC 7505 null MX).
//   - EHLO name: it resolves, to the address mail leaves from.
//   - Reverse DNS: each sending address has a PTR whose name resolves back
//     to it (forward-confirmed reverse DNS), ideally the EHLO name.
//   - SPF (RFC 7208): one record that parses, authorises the direct
//     addresses (evaluated by blitiri.com.ar/go/spf, the library chasquid
//     and maddy use) and includes the relay's SPF domain.
//   - DKIM (RFC 6376, RFC 8463): each selector's key record exists, parses,
//     and holds the key the Mailer signs with.
//   - DMARC (RFC 7489): a record exists (at the domain or its
//     organisational domain), its policy, and whether SPF or DKIM aligns on
//     each path — DMARC passes when one of them does.
//   - Relay: known quirks of well-known relays that break signatures or
//     rewrite the sender.
package doctor

import (
	"context"
	"crypto"
	"errors"
	"net"
	"net/netip"
	"strings"
)

// Resolver is the DNS the doctor reads. *net.Resolver satisfies it, and so
// does mx.ServerResolver.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// Status grades a finding.
type Status uint8

const (
	OK      Status = iota // nothing to change
	Warning               // works, but costs deliverability, or could not be told
	Problem               // mail fails or is likely refused or spam-foldered
)

// Path is the delivery path a finding concerns; its values are mailroute's
// Via values.
type Path uint8

const (
	Both      Path = 0
	Direct    Path = 1
	Smarthost Path = 2
)

// Finding is the outcome of one check.
type Finding struct {
	Check  string // "MX", "EHLO name", "reverse DNS", "SPF", "DKIM", "DMARC", "relay"
	Path   Path
	Status Status
	Query  string // what was looked up, e.g. "TXT _dmarc.example.net"
	Found  string // what was found, in words
	Fix    string // what to change; "" when nothing
}

// Key is a DKIM key to check.
type Key struct {
	Domain, Selector string
	// Public is the key the Mailer signs with; nil checks only that the
	// selector publishes a usable key.
	Public crypto.PublicKey
	// Headers are the fields the signatures cover (nil: the defaults).
	Headers []string
}

// Input is what to check.
type Input struct {
	// Domain is the sender domain: of the From address and the envelope
	// sender. A lower-case A-label.
	Domain string
	// Hostname is the EHLO name of direct delivery; "" when mail is never
	// sent direct.
	Hostname string
	// IPs are the public addresses direct delivery leaves from. nil: the
	// Hostname's addresses (which is wrong behind NAT).
	IPs []netip.Addr
	// Relay is the relay's host name; "" when there is none.
	Relay string
	// RelaySPF is the domain the relay asks senders to include in SPF
	// ("amazonses.com"); "": from the catalogue of known relays.
	RelaySPF string
	// Keys are the DKIM keys to check.
	Keys []Key
	// Resolver answers the lookups.
	Resolver Resolver
}

// Run performs every check and returns the findings in report order. It
// never fails: a lookup that fails is itself a finding.
func Run(ctx context.Context, in Input) []Finding {
	r := &run{ctx: ctx, in: in, relay: findRelay(in.Relay)}
	if in.RelaySPF != "" {
		r.relaySPF = trimDot(strings.ToLower(in.RelaySPF))
	} else if r.relay != nil {
		r.relaySPF = r.relay.SPF
	}
	// Known before DKIM and DMARC are checked: whether the relay breaks
	// the signatures decides DMARC alignment on its path.
	r.brokenByRelay = r.relay != nil && len(r.relay.rewritten(in.Keys)) > 0
	r.checkMX()
	if in.Hostname != "" {
		r.checkEHLO()
		r.checkReverse()
	}
	r.checkSPF()
	r.checkDKIM()
	r.checkDMARC()
	if in.Relay != "" {
		r.checkRelay()
	}
	return r.out
}

// run carries what one check learns for the later ones (DMARC alignment
// needs the SPF and DKIM results).
type run struct {
	ctx      context.Context
	in       Input
	out      []Finding
	relay    *relayInfo // nil: not a relay the catalogue knows
	relaySPF string

	ips           []netip.Addr // the direct addresses checked
	ipsGiven      bool
	spfRecord     string // the sender domain's SPF record, "" if none
	spfPass       bool   // SPF passes for at least one direct address
	relayInSPF    int    // 1 the relay's domain is included, -1 it is not, 0 unknown
	dkimGood      []bool // per Key: the published key matches
	brokenByRelay bool   // the relay rewrites a field the signatures cover
}

func (r *run) add(f Finding) { r.out = append(r.out, f) }

// notFound reports whether a lookup failed because the name or the record
// does not exist (as opposed to a failure that may pass).
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// lookupFailed describes a failure that is not "not found".
func lookupFailed(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		return "could not tell: the lookup failed (" + de.Err + ")"
	}
	return "could not tell: the lookup failed (" + err.Error() + ")"
}

const retryFix = "Run the check again; if it keeps failing, ask your DNS provider why their servers do not answer."

func trimDot(s string) string { return strings.TrimSuffix(s, ".") }

// join lists items as "a, b and c".
func join(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}
