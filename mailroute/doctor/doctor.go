// Package doctor tells whether a sender's own setup is right for both
// paths a mailroute Mailer sends on, by reading DNS; nothing is sent.
//
// The checks, in report order:
//
//   - MX: the sender domain can receive replies and bounces (RFC 5321
//     §5.1, RFC 7505 null MX).
//   - EHLO name: it resolves, to the address direct mail leaves from.
//   - Reverse DNS: each sending address has a PTR whose name resolves
//     back to it (forward-confirmed reverse DNS), ideally the EHLO name.
//   - SPF (RFC 7208, evaluated by blitiri.com.ar/go/spf): one record that
//     parses, authorises the direct addresses and includes the relay.
//   - DKIM (RFC 6376, RFC 8463): each selector's key record exists,
//     parses, and holds the key the Mailer signs with.
//   - DMARC (RFC 7489): a record exists, its policy, and whether SPF or
//     DKIM aligns on each path.
//   - Relay: known quirks of well-known relays (Amazon SES rewrites
//     Message-ID and Date) that break signatures.
//   - Port 25, with [CheckMailer]: whether the Mailer found, while
//     sending, that this host cannot connect out on port 25.
//
// [Check] takes the [mailroute.Config] a Mailer is made from;
// [CheckMailer] takes the Mailer itself.
package doctor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/mailroute/go-mailroute/internal/dnsname"
	checks "github.com/mailroute/go-mailroute/internal/doctor"
	"github.com/mailroute/go-mailroute/mailroute"
)

// Resolver is the DNS a check reads: a mailroute.Resolver that also
// answers TXT (SPF, DKIM, DMARC) and PTR (reverse DNS) lookups.
// *net.Resolver satisfies it, and so do mailroute.DNSServer's value and
// *mailtest.Resolver.
type Resolver interface {
	mailroute.Resolver
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Options says what a check cannot learn from the Config.
type Options struct {
	// Domain is the sender domain: that of the From addresses and the
	// envelope sender. "": the domain of the first Config.DKIM signature.
	Domain string
	// PublicIPs are the addresses direct delivery leaves from, as
	// receivers see them: both the IPv4 and the IPv6 one on a host that
	// has both, since each needs its reverse DNS and SPF. nil:
	// Config.Direct.LocalAddr when that is a public address, else the
	// addresses of Config.Hostname — which behind NAT are not the ones
	// receivers see, as the report then says.
	PublicIPs []netip.Addr
	// NoDirect says that mail is never sent direct (the Router sends
	// everything to the relay), so the EHLO name, reverse DNS and SPF
	// for this host are not checked.
	NoDirect bool
	// RelaySPF is the domain the relay's documentation says to include in
	// SPF, e.g. "amazonses.com". "": looked up in a list of well-known
	// relays by Config.Relay's host; for any other relay the report
	// says it could not tell.
	RelaySPF string
	// DKIMSelectors are further selectors of Domain to check whose keys
	// this program does not sign with (a mail provider's, say): their
	// records are read and parsed, not compared with a key.
	DKIMSelectors []string
	// Resolver answers the lookups. nil: Config.Resolver when it is a
	// Resolver (DNSServer's value is), else the system resolver.
	Resolver Resolver
}

// Status grades a Finding.
type Status uint8

const (
	// OK needs no change.
	OK Status = iota
	// Warning works but costs deliverability, or could not be told (a
	// lookup failed, a fact is missing).
	Warning
	// Problem makes mail fail, or be refused or filed as spam.
	Problem
)

// String returns "ok", "warning" or "problem".
func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warning:
		return "warning"
	case Problem:
		return "problem"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Finding is the outcome of one check of a Report.
type Finding struct {
	// Check names what was checked: "MX", "EHLO name", "reverse DNS",
	// "SPF", "DKIM", "DMARC", "relay", or "port 25".
	Check string
	// Path is the delivery path the finding concerns: mailroute.Direct,
	// the relay's, or 0 for both.
	Path   mailroute.Via
	Status Status
	// Query is what was looked up, e.g. "TXT _dmarc.example.net".
	Query string
	// Found is what was found, in words.
	Found string
	// Fix is what to change, often the exact record to publish; "" when
	// nothing.
	Fix string
}

// Report is the result of a check: findings in the order of the checks.
type Report struct {
	Domain   string
	Findings []Finding
}

// Status is the worst status of the findings.
func (r *Report) Status() Status {
	worst := OK
	for _, f := range r.Findings {
		worst = max(worst, f.Status)
	}
	return worst
}

// Check reads DNS and reports whether the sender setup is right for both
// paths a Mailer made from cfg sends on: the EHLO name and reverse DNS of
// direct delivery, SPF for this host and the relay, the DKIM keys of
// cfg.DKIM, DMARC and whether SPF or DKIM aligns on each path, the sender
// domain's MX, and known quirks of the relay. Nothing is sent.
//
// The error is only for options that cannot be checked (no domain, a
// malformed one); every DNS failure is a finding. An empty
// Config.Hostname is taken as this machine's name, as the system gives
// it.
func Check(ctx context.Context, cfg mailroute.Config, opts Options) (*Report, error) {
	return check(ctx, &cfg, opts)
}

// CheckMailer runs Check with the Mailer's configuration (and the EHLO
// name it uses), and adds what the Mailer has found while sending: that
// outbound port 25 appears blocked, when its detector concluded so.
func CheckMailer(ctx context.Context, m *mailroute.Mailer, opts Options) (*Report, error) {
	cfg := m.Config()
	r, err := check(ctx, &cfg, opts)
	if err != nil {
		return nil, err
	}
	lessons, err := m.Lessons(ctx)
	if err != nil {
		r.Findings = append(r.Findings, Finding{
			Check: "port 25", Path: mailroute.Direct, Status: Warning,
			Query: "the Mailer's learned routes", Found: "could not be read: " + err.Error(),
		})
		return r, nil
	}
	for _, l := range lessons {
		if l.Site != "*" {
			continue
		}
		r.Findings = append(r.Findings, Finding{
			Check:  "port 25",
			Path:   mailroute.Direct,
			Status: Problem,
			Query:  "outbound connections to MX hosts",
			Found:  "outbound port 25 appears blocked: " + l.Reply + "; direct mail goes through the relay until " + l.Until.UTC().Format(time.RFC3339),
			Fix:    `ask the hosting provider or ISP to open outbound port 25, or route every domain through the relay: Rules{{Domains: []string{"*"}, Via: Relayed}}`,
		})
	}
	return r, nil
}

func check(ctx context.Context, cfg *mailroute.Config, opts Options) (*Report, error) {
	domain := opts.Domain
	if domain == "" && len(cfg.DKIM) > 0 {
		domain = cfg.DKIM[0].Domain
	}
	if domain == "" {
		return nil, fmt.Errorf("doctor: no sender domain (Options.Domain)")
	}
	domain, err := dnsname.Normalize(domain)
	if err != nil {
		return nil, fmt.Errorf("doctor: Options.Domain: %w", err)
	}
	in := checks.Input{Domain: domain, RelaySPF: opts.RelaySPF, Resolver: resolverOf(cfg, opts)}

	if !opts.NoDirect {
		h := cfg.Hostname
		if h == "" {
			if h, err = os.Hostname(); err != nil {
				return nil, fmt.Errorf("doctor: Config.Hostname is empty and the system host name is unknown: %w", err)
			}
		}
		if n, err := dnsname.Normalize(h); err == nil {
			h = n
		} // else a bad name is what the check is for: report it as given
		in.Hostname = h
		for _, ip := range opts.PublicIPs {
			if !ip.IsValid() {
				return nil, fmt.Errorf("doctor: Options.PublicIPs holds an invalid address")
			}
			in.IPs = append(in.IPs, ip.Unmap())
		}
		if ip := cfg.Direct.LocalAddr; in.IPs == nil && ip.IsValid() && ip.IsGlobalUnicast() && !ip.IsPrivate() {
			in.IPs = []netip.Addr{ip.Unmap()}
		}
	}
	if cfg.Relay != nil {
		host, _, err := net.SplitHostPort(cfg.Relay.Addr)
		if err != nil {
			host = cfg.Relay.Addr
		}
		in.Relay = host
	}
	for _, s := range cfg.DKIM {
		k := checks.Key{Domain: s.Domain, Selector: s.Selector, Headers: s.Headers}
		if d, err := dnsname.Normalize(s.Domain); err == nil {
			k.Domain = d
		}
		if s.Signer != nil {
			k.Public = s.Signer.Public()
		}
		in.Keys = append(in.Keys, k)
	}
	for _, sel := range opts.DKIMSelectors {
		in.Keys = append(in.Keys, checks.Key{Domain: domain, Selector: sel})
	}

	rep := &Report{Domain: domain}
	for _, f := range checks.Run(ctx, in) {
		rep.Findings = append(rep.Findings, Finding{
			Check: f.Check, Path: mailroute.Via(f.Path), Status: Status(f.Status),
			Query: f.Query, Found: f.Found, Fix: f.Fix,
		})
	}
	return rep, nil
}

func resolverOf(cfg *mailroute.Config, opts Options) Resolver {
	if opts.Resolver != nil {
		return opts.Resolver
	}
	if r, ok := cfg.Resolver.(Resolver); ok {
		return r
	}
	return net.DefaultResolver
}
