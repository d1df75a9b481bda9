package doctor

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
)

// checkSPF: one record that parses, authorises the direct addresses and
// includes the relay. The direct addresses are evaluated by the SPF
// library; the relay, whose addresses are not known here, by looking for
// its domain among the record's include: and redirect= targets.
func (r *run) checkSPF() {
	d := r.in.Domain
	f := Finding{Check: "SPF", Query: "TXT " + d}
	txts, err := r.in.Resolver.LookupTXT(r.ctx, d)
	if err != nil && !notFound(err) {
		f.Status, f.Found, f.Fix = Warning, lookupFailed(err), retryFix
		r.add(f)
		return
	}
	var records []string
	for _, t := range txts {
		if isSPF(t) {
			records = append(records, t)
		}
	}
	switch len(records) {
	case 0:
		f.Status = Problem
		f.Found = "no SPF record (a TXT record starting with v=spf1); receivers cannot tell which servers may send for " + d + ", and Gmail and Yahoo require SPF or DKIM"
		f.Fix = fmt.Sprintf("Publish %s. TXT %q", d, r.suggestSPF())
		r.add(f)
		return
	case 1:
	default:
		f.Status = Problem
		f.Found = fmt.Sprintf("%d SPF records; receivers treat more than one as an error (permerror, RFC 7208 §4.5) and SPF fails everywhere: %s", len(records), strings.Join(records, " | "))
		f.Fix = "Merge them into one TXT record, e.g. " + fmt.Sprintf("%q", r.suggestSPF())
		r.add(f)
		return
	}
	r.spfRecord = records[0]
	f.Found = r.spfRecord
	switch q := allQualifier(r.spfRecord); q {
	case "+":
		f.Status = Problem
		f.Found += " — it ends in +all, which authorises every address on the internet"
		f.Fix = "End the record with ~all or -all."
	case "?":
		f.Status = Warning
		f.Found += " — it ends in ?all, which says nothing about other senders"
		f.Fix = "End the record with ~all or -all once every sending server is listed."
	}

	// The library evaluates the record for each direct address, as a
	// receiver would; a broken record shows as permerror.
	var direct []Finding
	for _, ip := range r.ips {
		res, err := spf.CheckHostWithSender(net.IP(ip.AsSlice()), r.in.Hostname, "postmaster@"+d,
			spf.WithResolver(r.in.Resolver), spf.WithContext(r.ctx))
		df := Finding{Check: "SPF", Path: Direct, Query: fmt.Sprintf("SPF %s for %s", d, ip)}
		switch res {
		case spf.Pass:
			r.spfPass = true
			df.Found = fmt.Sprintf("%s is authorised (pass)", ip)
		case spf.PermError:
			f.Status = Problem
			f.Found = r.spfRecord + " — it does not evaluate: " + explainSPFError(err)
			f.Fix = "Correct the record; test it with the SPF check of your choice after publishing."
			r.add(f)
			return
		case spf.TempError:
			df.Status, df.Found, df.Fix = Warning, "could not tell: temperror ("+errText(err)+")", retryFix
		default:
			df.Status = Problem
			df.Found = fmt.Sprintf("%s is not authorised (%s): receivers see direct mail from it as forged", ip, res)
			df.Fix = fmt.Sprintf("Add %s before the all: %q", mechanism(ip), insertBeforeAll(r.spfRecord, mechanism(ip)))
		}
		direct = append(direct, df)
	}
	r.add(f)
	if r.in.Hostname != "" && len(r.ips) == 0 {
		direct = append(direct, Finding{Check: "SPF", Path: Direct, Status: Warning, Query: "SPF " + d,
			Found: "could not tell: no address of direct delivery is known",
			Fix:   "Give the public addresses mail leaves from (doctor.Options.PublicIPs)."})
	}
	r.out = append(r.out, direct...)
	if r.in.Relay != "" {
		r.checkRelaySPF()
	}
}

// checkRelaySPF looks for the relay's SPF domain among the record's
// includes, following them (at most 10 lookups, as SPF itself allows).
func (r *run) checkRelaySPF() {
	d := r.in.Domain
	f := Finding{Check: "SPF", Path: Smarthost, Query: "SPF " + d + ": include:" + r.relaySPF}
	if r.relaySPF == "" {
		f.Query = "SPF " + d + ": the include of " + r.in.Relay
		f.Status = Warning
		f.Found = "could not tell: mailroute does not know which SPF domain " + r.in.Relay + " uses"
		f.Fix = "Find the include: in the relay's documentation and give it (doctor.Options.RelaySPF), e.g. amazonses.com."
		r.add(f)
		return
	}
	found, via := r.includes(r.spfRecord, r.relaySPF)
	own := r.relay != nil && r.relay.OwnEnvelope != ""
	switch {
	case found:
		r.relayInSPF = 1
		f.Found = "include:" + r.relaySPF + " is there"
		if via != "" {
			f.Found += " (through " + via + ")"
		}
	case own:
		r.relayInSPF = -1
		f.Found = "include:" + r.relaySPF + " is not in " + d + "'s SPF, which is fine: " + r.relay.OwnEnvelope
	default:
		r.relayInSPF = -1
		f.Status = Problem
		f.Found = "include:" + r.relaySPF + " is not in " + d + "'s SPF: mail the relay sends for " + d + " fails SPF"
		f.Fix = fmt.Sprintf("Add include:%s before the all: %q", r.relaySPF, insertBeforeAll(r.spfRecord, "include:"+r.relaySPF))
	}
	r.add(f)
}

// includes reports whether record names target in an include: or
// redirect=, directly or through the records those name. via is the chain
// of domains it was found through.
func (r *run) includes(record, target string) (found bool, via string) {
	lookups := 0
	seen := map[string]bool{}
	var walk func(record string, path []string) (bool, string)
	walk = func(record string, path []string) (bool, string) {
		for _, dom := range spfTargets(record) {
			if dom == target {
				return true, strings.Join(path, " → ")
			}
			if seen[dom] || lookups >= 10 {
				continue
			}
			seen[dom] = true
			lookups++
			txts, err := r.in.Resolver.LookupTXT(r.ctx, dom)
			if err != nil {
				continue
			}
			for _, t := range txts {
				if isSPF(t) {
					if ok, v := walk(t, append(path, dom)); ok {
						return true, v
					}
				}
			}
		}
		return false, ""
	}
	return walk(record, nil)
}

// isSPF reports whether a TXT record is an SPF record (RFC 7208 §4.5).
func isSPF(txt string) bool {
	return len(txt) >= 6 && strings.EqualFold(txt[:6], "v=spf1") && (len(txt) == 6 || txt[6] == ' ')
}

// spfTargets returns the domains of a record's include: mechanisms and
// redirect= modifier, lower case. Targets with macros are skipped: they
// depend on the message.
func spfTargets(record string) []string {
	var out []string
	for _, term := range strings.Fields(record)[1:] {
		term = strings.ToLower(strings.TrimLeft(term, "+-~?"))
		var dom string
		if rest, ok := strings.CutPrefix(term, "include:"); ok {
			dom = rest
		} else if rest, ok := strings.CutPrefix(term, "redirect="); ok {
			dom = rest
		}
		if dom != "" && !strings.Contains(dom, "%") {
			out = append(out, trimDot(dom))
		}
	}
	return out
}

// allQualifier returns the qualifier of the record's all mechanism ("+"
// when written bare), or "" when it has none.
func allQualifier(record string) string {
	for _, term := range strings.Fields(record)[1:] {
		t := strings.ToLower(term)
		switch t {
		case "all", "+all":
			return "+"
		case "-all", "~all", "?all":
			return t[:1]
		}
	}
	return ""
}

// insertBeforeAll returns record with term added before its all mechanism
// or redirect, or at its end.
func insertBeforeAll(record, term string) string {
	fields := strings.Fields(record)
	for i, t := range fields {
		l := strings.ToLower(strings.TrimLeft(t, "+-~?"))
		if i > 0 && (l == "all" || strings.HasPrefix(l, "redirect=")) {
			return strings.Join(append(fields[:i:i], append([]string{term}, fields[i:]...)...), " ")
		}
	}
	return record + " " + term
}

// mechanism is the SPF mechanism authorising one address.
func mechanism(ip netip.Addr) string {
	if ip.Is4() {
		return "ip4:" + ip.String()
	}
	return "ip6:" + ip.String()
}

// suggestSPF composes a record for what is known: the direct addresses
// and the relay.
func (r *run) suggestSPF() string {
	s := "v=spf1"
	for _, ip := range r.ips {
		s += " " + mechanism(ip)
	}
	if r.in.Hostname != "" && len(r.ips) == 0 {
		s += " a:" + r.in.Hostname
	}
	if r.relaySPF != "" {
		s += " include:" + r.relaySPF
	}
	return s + " ~all"
}

func errText(err error) string {
	if err == nil {
		return "no detail"
	}
	return err.Error()
}

// explainSPFError words the library's permerror causes.
func explainSPFError(err error) string {
	switch {
	case err == nil:
		return "permerror"
	case errors.Is(err, spf.ErrLookupLimitReached):
		return "it needs more than 10 DNS lookups (RFC 7208 §4.6.4); flatten some includes"
	case errors.Is(err, spf.ErrVoidLookupLimitReached):
		return "more than 2 of its lookups find nothing (RFC 7208 §4.6.4); remove includes of domains without SPF"
	case errors.Is(err, spf.ErrMultipleRecords):
		return "an included domain has more than one SPF record"
	}
	return err.Error()
}
