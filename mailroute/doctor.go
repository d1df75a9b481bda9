package mailroute

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/mailroute/go-mailroute/internal/dnsname"
	"github.com/mailroute/go-mailroute/internal/doctor"
)

// CheckResolver is the DNS Check reads: a Resolver that also answers TXT
// (SPF, DKIM, DMARC) and PTR (reverse DNS) lookups. *net.Resolver
// satisfies it, and so does the value of DNSServer.
type CheckResolver interface {
	Resolver
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// CheckOptions says what Check cannot learn from the Config.
type CheckOptions struct {
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
	// everything to the smarthost), so the EHLO name, reverse DNS and SPF
	// for this host are not checked.
	NoDirect bool
	// RelaySPF is the domain the smarthost's documentation says to include
	// in SPF, e.g. "amazonses.com". "": looked up in mailroute's list of
	// well-known relays by Config.Smarthost's host; for any other relay
	// the report says it could not tell.
	RelaySPF string
	// DKIMSelectors are further selectors of Domain to check whose keys
	// this program does not sign with (a mail provider's, say): their
	// records are read and parsed, not compared with a key.
	DKIMSelectors []string
	// Resolver answers the lookups. nil: Config.Resolver when it is a
	// CheckResolver (DNSServer's value is), else the system resolver.
	Resolver CheckResolver
}

// CheckStatus grades a Finding.
type CheckStatus uint8

const (
	// CheckOK needs no change.
	CheckOK CheckStatus = iota
	// CheckWarning works but costs deliverability, or could not be told
	// (a lookup failed, a fact is missing).
	CheckWarning
	// CheckProblem makes mail fail, or be refused or filed as spam.
	CheckProblem
)

// String returns "ok", "warning" or "problem".
func (s CheckStatus) String() string {
	switch s {
	case CheckOK:
		return "ok"
	case CheckWarning:
		return "warning"
	case CheckProblem:
		return "problem"
	}
	return "CheckStatus(" + strconv.Itoa(int(s)) + ")"
}

// Finding is the outcome of one check of a Report.
type Finding struct {
	// Check names what was checked: "MX", "EHLO name", "reverse DNS",
	// "SPF", "DKIM", "DMARC", "relay", or "port 25" (what a Mailer found
	// while sending; see BlockedPort25).
	Check string
	// Path is the delivery path the finding concerns: Direct, Smarthost,
	// or 0 for both.
	Path   Via
	Status CheckStatus
	// Query is what was looked up, e.g. "TXT _dmarc.example.net".
	Query string
	// Found is what was found, in words.
	Found string
	// Fix is what to change, often the exact record to publish; "" when
	// nothing.
	Fix string
}

// Report is the result of Check: findings in the order of the checks.
type Report struct {
	Domain   string
	Findings []Finding
}

// Status is the worst status of the findings.
func (r *Report) Status() CheckStatus {
	worst := CheckOK
	for _, f := range r.Findings {
		worst = max(worst, f.Status)
	}
	return worst
}

// String formats the report as a table: one row per finding, its text
// wrapped to fit a terminal, and the fix, when there is one, below it.
func (r *Report) String() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "STATUS\tCHECK\tPATH\tLOOKED UP\tFOUND")
	for _, f := range r.Findings {
		path := "both"
		if f.Path != 0 {
			path = f.Path.String()
		}
		lines := wrap(f.Found, reportWidth)
		if f.Fix != "" {
			for i, l := range wrap(f.Fix, reportWidth-2) {
				if i == 0 {
					lines = append(lines, "→ "+l)
				} else {
					lines = append(lines, "  "+l)
				}
			}
		}
		for i, l := range lines {
			if i == 0 {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", f.Status, f.Check, path, f.Query, l)
			} else {
				fmt.Fprintf(w, "\t\t\t\t%s\n", l)
			}
		}
	}
	w.Flush()
	return b.String()
}

// reportWidth is the width of the FOUND column of Report.String.
const reportWidth = 72

// wrap breaks s at spaces into lines of at most width runes; a longer word
// (a key in a TXT record) gets a line of its own.
func wrap(s string, width int) []string {
	var lines []string
	var line strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		wl := utf8.RuneCountInString(word)
		if n > 0 && n+1+wl > width {
			lines = append(lines, line.String())
			line.Reset()
			n = 0
		}
		if n > 0 {
			line.WriteByte(' ')
			n++
		}
		line.WriteString(word)
		n += wl
	}
	if n > 0 || len(lines) == 0 {
		lines = append(lines, line.String())
	}
	return lines
}

// Check reads DNS and reports whether the sender setup is right for both
// paths a Mailer with cfg sends on, in one call: the EHLO name and reverse
// DNS of direct delivery, SPF for this host and the smarthost, the DKIM
// keys of cfg.DKIM, DMARC and whether SPF or DKIM aligns on each path, the
// sender domain's MX, and known quirks of the relay. Nothing is sent.
//
// The error is only for options that cannot be checked (no domain, a
// malformed one); every DNS failure is a finding.
func Check(ctx context.Context, cfg Config, opts CheckOptions) (*Report, error) {
	return check(ctx, &cfg, "", opts)
}

// Check runs Check with the Mailer's configuration.
// Beside the setup checks, it reports what the Mailer has found while
// sending, such as a blocked outbound port 25.
func (m *Mailer) Check(ctx context.Context, opts CheckOptions) (*Report, error) {
	r, err := check(ctx, &m.cfg, m.hostname, opts)
	if r != nil {
		m.learn.findings(r)
	}
	return r, err
}

func check(ctx context.Context, cfg *Config, hostname string, opts CheckOptions) (*Report, error) {
	domain := opts.Domain
	if domain == "" && len(cfg.DKIM) > 0 {
		domain = cfg.DKIM[0].Domain
	}
	if domain == "" {
		return nil, fmt.Errorf("mailroute: Check: no sender domain (CheckOptions.Domain)")
	}
	domain, err := dnsname.Normalize(domain)
	if err != nil {
		return nil, fmt.Errorf("mailroute: Check: CheckOptions.Domain: %w", err)
	}
	in := doctor.Input{Domain: domain, RelaySPF: opts.RelaySPF, Resolver: checkResolver(cfg, opts)}

	if !opts.NoDirect {
		if hostname == "" {
			h := cfg.Hostname
			if h == "" {
				if h, err = os.Hostname(); err != nil {
					return nil, fmt.Errorf("mailroute: Check: Config.Hostname is empty and the system host name is unknown: %w", err)
				}
			}
			if hostname, err = checkHostname(h); err != nil {
				// A bad name is what the check is for: report it as given.
				hostname = h
			}
		}
		in.Hostname = hostname
		for _, ip := range opts.PublicIPs {
			if !ip.IsValid() {
				return nil, fmt.Errorf("mailroute: Check: CheckOptions.PublicIPs holds an invalid address")
			}
			in.IPs = append(in.IPs, ip.Unmap())
		}
		if ip := cfg.Direct.LocalAddr; in.IPs == nil && ip.IsValid() && ip.IsGlobalUnicast() && !ip.IsPrivate() {
			in.IPs = []netip.Addr{ip.Unmap()}
		}
	}
	if cfg.Smarthost != nil {
		host, _, err := net.SplitHostPort(cfg.Smarthost.Addr)
		if err != nil {
			host = cfg.Smarthost.Addr
		}
		in.Relay = host
	}
	for _, s := range cfg.DKIM {
		k := doctor.Key{Domain: s.Domain, Selector: s.Selector, Headers: s.Headers}
		if d, err := dnsname.Normalize(s.Domain); err == nil {
			k.Domain = d
		}
		if s.Signer != nil {
			k.Public = s.Signer.Public()
		}
		in.Keys = append(in.Keys, k)
	}
	for _, sel := range opts.DKIMSelectors {
		in.Keys = append(in.Keys, doctor.Key{Domain: domain, Selector: sel})
	}

	rep := &Report{Domain: domain}
	for _, f := range doctor.Run(ctx, in) {
		rep.Findings = append(rep.Findings, Finding{
			Check: f.Check, Path: Via(f.Path), Status: CheckStatus(f.Status),
			Query: f.Query, Found: f.Found, Fix: f.Fix,
		})
	}
	return rep, nil
}

func checkResolver(cfg *Config, opts CheckOptions) CheckResolver {
	if opts.Resolver != nil {
		return opts.Resolver
	}
	if r, ok := cfg.Resolver.(CheckResolver); ok {
		return r
	}
	return net.DefaultResolver
}
