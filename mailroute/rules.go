package mailroute

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/mailroute/go-mailroute/internal/dnsname"
	"github.com/mailroute/go-mailroute/internal/mx"
)

// Rule sends the destinations it matches the way Via says. A rule matches a
// domain that one of its Domains patterns matches, or that belongs to one of
// its Providers: by the provider's mailbox domains, or because EVERY MX host
// of the domain belongs to one of the listed providers (a domain with one
// Google MX and one of its own is not Google).
type Rule struct {
	// Domains are patterns: "gmail.com" matches exactly that domain,
	// ".example.com" matches it and all its subdomains, "*" matches
	// anything. Matching is by whole labels and case-insensitive; Unicode
	// names are compared as A-labels.
	Domains []string
	// Providers match by mailbox domain first and by MX hosts second; the
	// MX lookup is the one delivery uses, through the Mailer's cache.
	Providers []Provider
	// Via is Direct or Relayed.
	Via Via
	// Relay names the relay of Config.Relays these destinations use: the
	// one that delivers a Relayed route, and the fallback of a Direct
	// one. "": the sender's relay (Config.SenderRelays) or the default,
	// Config.Relay.
	Relay string
}

// Rules is an ordered list of rules: the first rule that matches decides.
// A rule that does not match passes to the next; when none matches the
// result wraps ErrNoRoute, so a list usually ends with a "*" rule.
//
// Rules implements Router. Calling Route on a Rules value checks and
// compiles the list on every call; the Mailer compiles a Rules router once
// in New, and Compile does the same for other uses.
type Rules []Rule

// Route implements Router.
func (rs Rules) Route(ctx context.Context, d *Destination) (Route, error) {
	c, err := compileRules(rs)
	if err != nil {
		return Route{}, err
	}
	return c.Route(ctx, d)
}

// Compile checks every pattern, provider and Via of the list and returns an
// equivalent Router that matches domains without allocating. Errors name
// the rule and the offending pattern.
func (rs Rules) Compile() (Router, error) {
	return compileRules(rs)
}

func mustCompile(rs Rules) Router {
	c, err := compileRules(rs)
	if err != nil {
		panic(err)
	}
	return c
}

// compiledRules is Rules with patterns normalised and every reason that does
// not depend on DNS written in advance, so a rule hit costs no allocation.
type compiledRules struct {
	rules []compiledRule
}

type compiledRule struct {
	via      Via
	relay    string
	exact    map[string]string // domain → reason
	suffixes []suffixRule
	wildcard string // reason; "" when the rule has no "*"
	mx       []compiledProvider
	label    string // "rule 2", for reasons built at route time
}

type suffixRule struct{ domain, reason string }

type compiledProvider struct {
	name     string
	suffixes []string // normalised, without the leading dot
}

func compileRules(rs Rules) (*compiledRules, error) {
	c := &compiledRules{rules: make([]compiledRule, 0, len(rs))}
	for i, r := range rs {
		label := "rule " + strconv.Itoa(i+1)
		cr := compiledRule{via: r.Via, relay: r.Relay, exact: make(map[string]string), label: label}
		if r.Via != Direct && r.Via != Relayed {
			return nil, fmt.Errorf("mailroute: %s: Via must be Direct or Relayed, not %v", label, r.Via)
		}
		if len(r.Domains) == 0 && len(r.Providers) == 0 {
			return nil, fmt.Errorf("mailroute: %s matches nothing: give it Domains or Providers", label)
		}
		for _, p := range r.Domains {
			pat, err := dnsname.CompilePattern(p)
			if err != nil {
				return nil, fmt.Errorf("mailroute: %s: %w", label, err)
			}
			cr.add(pat, fmt.Sprintf("%s matches %q", label, p))
		}
		for _, prov := range r.Providers {
			if prov.Name == "" {
				return nil, fmt.Errorf("mailroute: %s: a provider needs a Name", label)
			}
			if len(prov.Domains) == 0 && len(prov.MXSuffixes) == 0 {
				return nil, fmt.Errorf("mailroute: %s: provider %s has neither Domains nor MXSuffixes", label, prov.Name)
			}
			for _, p := range prov.Domains {
				pat, err := dnsname.CompilePattern(p)
				if err != nil || pat.Kind == dnsname.PatternWildcard {
					return nil, fmt.Errorf("mailroute: %s: provider %s: bad mailbox domain %q: %v", label, prov.Name, p, err)
				}
				reason := fmt.Sprintf("%s is a %s mailbox domain (%s)", pat.Domain, prov.Name, label)
				if pat.Kind == dnsname.PatternSuffix {
					reason = fmt.Sprintf("under %s, a %s mailbox domain (%s)", pat.Domain, prov.Name, label)
				}
				cr.add(pat, reason)
			}
			cp := compiledProvider{name: prov.Name}
			for _, s := range prov.MXSuffixes {
				n, err := dnsname.Normalize(strings.TrimPrefix(s, "."))
				if err != nil {
					return nil, fmt.Errorf("mailroute: %s: provider %s: bad MX suffix %q: %w", label, prov.Name, s, err)
				}
				cp.suffixes = append(cp.suffixes, n)
			}
			if len(cp.suffixes) > 0 {
				cr.mx = append(cr.mx, cp)
			}
		}
		c.rules = append(c.rules, cr)
	}
	return c, nil
}

// add records a pattern; within a rule the first pattern to match a domain
// gives the reason.
func (cr *compiledRule) add(p dnsname.Pattern, reason string) {
	switch p.Kind {
	case dnsname.PatternWildcard:
		if cr.wildcard == "" {
			cr.wildcard = cr.label + ` matches any domain ("*")`
		}
	case dnsname.PatternSuffix:
		cr.suffixes = append(cr.suffixes, suffixRule{domain: p.Domain, reason: reason})
	default:
		if _, dup := cr.exact[p.Domain]; !dup {
			cr.exact[p.Domain] = reason
		}
	}
}

// Route implements Router.
func (c *compiledRules) Route(ctx context.Context, d *Destination) (Route, error) {
	var (
		answer mx.Answer
		mxErr  error
		looked bool
	)
	for i := range c.rules {
		r := &c.rules[i]
		if !d.IsLiteral() {
			if reason, ok := r.exact[d.Domain]; ok {
				return Route{Via: r.via, Relay: r.relay, Reason: reason}, nil
			}
			for _, s := range r.suffixes {
				if dnsname.HasSuffix(d.Domain, s.domain) {
					return Route{Via: r.via, Relay: r.relay, Reason: s.reason}, nil
				}
			}
		}
		if r.wildcard != "" {
			return Route{Via: r.via, Relay: r.relay, Reason: r.wildcard}, nil
		}
		if len(r.mx) == 0 || d.IsLiteral() {
			continue
		}
		if !looked {
			answer, mxErr = d.answer(ctx)
			looked = true
		}
		if mxErr != nil {
			// Without the MX hosts this rule cannot be decided, and
			// skipping it could send mail the way the user ruled out.
			return Route{}, fmt.Errorf("mailroute: routing %s (%s needs its MX hosts): %w", d.Domain, r.label, mxErr)
		}
		if names, ok := r.ownsAll(answer); ok {
			return Route{Via: r.via, Relay: r.relay, Reason: mxReason(r.label, d.Domain, names, answer)}, nil
		}
	}
	return Route{}, fmt.Errorf("%w for %s", ErrNoRoute, d.Domain)
}

// ownsAll reports whether every MX host belongs to one of the rule's
// providers, and which providers they were, in order of first appearance.
func (r *compiledRule) ownsAll(a mx.Answer) ([]string, bool) {
	if len(a.Hosts) == 0 {
		return nil, false
	}
	var names []string
	for _, h := range a.Hosts {
		owner := ""
		for _, p := range r.mx {
			for _, s := range p.suffixes {
				if dnsname.HasSuffix(h.Host, s) {
					owner = p.name
					break
				}
			}
			if owner != "" {
				break
			}
		}
		if owner == "" {
			return nil, false
		}
		seen := false
		for _, n := range names {
			seen = seen || n == owner
		}
		if !seen {
			names = append(names, owner)
		}
	}
	return names, true
}

func mxReason(label, domain string, providers []string, a mx.Answer) string {
	var b strings.Builder
	b.WriteString(label)
	b.WriteString(": ")
	if a.Implicit {
		b.WriteString(domain + " has no MX and its own host belongs to ")
	} else {
		b.WriteString("every MX of " + domain + " is ")
	}
	b.WriteString(strings.Join(providers, " or "))
	b.WriteString(" (")
	for i, h := range a.Hosts {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(h.Host)
	}
	b.WriteString(")")
	return b.String()
}
