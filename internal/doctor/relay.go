package doctor

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/mailroute/go-mailroute/internal/dkimsign"
)

// relayInfo is what is known about a well-known relay. Entries come from
// the providers' own documentation; a relay that is not here is checked
// for what DNS shows, and the rest is said to be unknown.
type relayInfo struct {
	Name string
	// match reports whether a relay host name is this relay's.
	match func(host string) bool
	// SPF is the domain its documentation says to include.
	SPF string
	// OwnEnvelope, when set, says that the relay sends with a bounce
	// address of its own, so SPF is checked against its domain, not
	// yours, and never aligns unless a custom MAIL FROM is set up.
	OwnEnvelope string
	// Rewrites are header fields the relay replaces: signatures that
	// cover them fail after the relay.
	Rewrites []string
	// RewritesWhy says where that is documented.
	RewritesWhy string
	// Quirk is a warning for every user of the relay.
	Quirk, QuirkFix string
}

func suffix(s string) func(string) bool {
	return func(h string) bool { return h == strings.TrimPrefix(s, ".") || strings.HasSuffix(h, s) }
}

var relays = []relayInfo{
	{
		Name: "Amazon SES",
		match: func(h string) bool {
			return strings.HasPrefix(h, "email-smtp.") && strings.HasSuffix(h, ".amazonaws.com")
		},
		SPF:         "amazonses.com",
		OwnEnvelope: "Amazon SES sends with its own bounce address (amazonses.com) unless a custom MAIL FROM domain is set up, so SPF never aligns for this path",
		Rewrites:    []string{"Message-ID", "Date"},
		RewritesWhy: "Amazon SES replaces Message-ID and Date; its guide to manual DKIM signing says not to sign them",
	},
	{
		Name:        "Postmark",
		match:       suffix(".postmarkapp.com"),
		SPF:         "spf.mtasv.net",
		OwnEnvelope: "Postmark sends with its own Return-Path (pm.mtasv.net) unless a custom Return-Path domain is set up, so SPF never aligns for this path",
	},
	{
		Name:        "SendGrid",
		match:       suffix(".sendgrid.net"),
		SPF:         "sendgrid.net",
		OwnEnvelope: "SendGrid sends with its own bounce domain unless domain authentication is set up, so SPF never aligns for this path",
	},
	{
		Name:        "Mailgun",
		match:       suffix(".mailgun.org"),
		SPF:         "mailgun.org",
		OwnEnvelope: "Mailgun sends with a bounce address at the sending domain configured in Mailgun, whose SPF is the one that matters",
	},
	{
		Name:     "Gmail",
		match:    func(h string) bool { return h == "smtp.gmail.com" },
		SPF:      "_spf.google.com",
		Quirk:    "smtp.gmail.com rewrites the From address to the account you log in with unless the address is one of the account's verified \"Send mail as\" addresses",
		QuirkFix: "Add the From addresses you use as \"Send mail as\" addresses of the account, or use smtp-relay.gmail.com (Google Workspace).",
	},
	{
		Name:  "Google Workspace SMTP relay",
		match: func(h string) bool { return h == "smtp-relay.gmail.com" },
		SPF:   "_spf.google.com",
	},
	{
		Name:     "Microsoft 365",
		match:    func(h string) bool { return h == "smtp.office365.com" || h == "smtp-mail.outlook.com" },
		SPF:      "spf.protection.outlook.com",
		Quirk:    "Microsoft 365 refuses a From address the mailbox you log in with may not send as (554 5.2.252 SendAsDenied)",
		QuirkFix: "Send from the mailbox's own address, or grant it Send As rights for the From addresses you use.",
	},
}

func findRelay(host string) *relayInfo {
	host = trimDot(strings.ToLower(host))
	for i := range relays {
		if relays[i].match(host) {
			return &relays[i]
		}
	}
	return nil
}

// rewritten returns the fields the relay rewrites that some key signs.
func (ri *relayInfo) rewritten(keys []Key) []string {
	var out []string
	for _, field := range ri.Rewrites {
		for _, k := range keys {
			h := k.Headers
			if h == nil {
				h = dkimsign.DefaultHeaders
			}
			if slices.ContainsFunc(h, func(s string) bool { return strings.EqualFold(s, field) }) {
				out = append(out, field)
				break
			}
		}
	}
	return out
}

// checkRelay: the relay's name resolves, and what is known of it.
func (r *run) checkRelay() {
	host := r.in.Relay
	f := Finding{Check: "relay", Path: Smarthost, Query: "A/AAAA " + host}
	var addrs []net.IPAddr
	var err error
	if ip, perr := netip.ParseAddr(host); perr == nil {
		f.Query = "Relay.Addr " + host
		addrs = []net.IPAddr{{IP: ip.AsSlice()}}
	} else {
		addrs, err = r.in.Resolver.LookupIPAddr(r.ctx, host)
	}
	switch {
	case err != nil && !notFound(err):
		f.Status, f.Found, f.Fix = Warning, lookupFailed(err), retryFix
	case len(addrs) == 0:
		f.Status = Problem
		f.Found = host + " does not resolve: nothing can be sent through it"
		f.Fix = "Check Relay.Addr against the relay's documentation."
	default:
		f.Found = fmt.Sprintf("%s has %s", host, addrs[0].IP)
		if r.relay != nil {
			f.Found += " (" + r.relay.Name + ")"
		}
	}
	r.add(f)

	q := Finding{Check: "relay", Path: Smarthost, Query: "known quirks of " + host}
	if r.relay != nil {
		q.Query = "known quirks of " + r.relay.Name
	}
	switch {
	case r.relay == nil:
		q.Found = "not a relay mailroute knows; no known quirks"
	case len(r.relay.rewritten(r.in.Keys)) > 0:
		fields := r.relay.rewritten(r.in.Keys)
		q.Status = Problem
		q.Found = r.relay.RewritesWhy + ", and your DKIM signatures cover " + join(fields) + ": they fail after the relay"
		q.Fix = "Set DKIMSignature.Headers to DefaultDKIMHeaders() without " + join(fields) + "."
	case r.relay.Quirk != "":
		q.Status = Warning
		q.Found = r.relay.Quirk
		q.Fix = r.relay.QuirkFix
	case len(r.relay.Rewrites) > 0:
		q.Found = r.relay.RewritesWhy + "; your signatures do not cover them"
	default:
		q.Found = "no known quirks of " + r.relay.Name
	}
	r.add(q)
}
