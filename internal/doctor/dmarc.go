package doctor

import (
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// checkDMARC: the policy record, then whether DMARC can pass on each path:
// it does when SPF or DKIM passes for a domain aligned with the From
// domain (RFC 7489 §3.1).
func (r *run) checkDMARC() {
	d := r.in.Domain
	org := orgDomain(d)
	f := Finding{Check: "DMARC", Query: "TXT _dmarc." + d}
	rec, at, status, found := r.lookupDMARC(d)
	if rec == nil && status == OK && org != d {
		// RFC 7489 §6.6.3: no record at the domain, so the organisational
		// domain's applies, with its subdomain policy.
		f.Query += ", TXT _dmarc." + org
		rec, at, status, found = r.lookupDMARC(org)
	}
	var policy dmarc.Policy
	switch {
	case rec == nil && status == OK:
		f.Status = Warning
		f.Found = "no DMARC record: receivers have no policy for mail failing SPF and DKIM, and Gmail and Yahoo require one from bulk senders"
		f.Fix = fmt.Sprintf("Publish _dmarc.%s. TXT \"v=DMARC1; p=none; rua=mailto:postmaster@%s\", then move to p=quarantine once reports show your mail aligned.", org, org)
	case rec == nil:
		f.Status, f.Found = status, found
		if status == Problem {
			f.Fix = "Publish exactly one record starting with v=DMARC1 at _dmarc." + org + "."
		} else {
			f.Fix = retryFix
		}
	default:
		policy = rec.Policy
		if at != d && rec.SubdomainPolicy != "" {
			policy = rec.SubdomainPolicy
		}
		f.Found = fmt.Sprintf("p=%s", policy)
		if at != d {
			f.Found += " (from _dmarc." + at + ", the organisational domain)"
		}
		switch policy {
		case dmarc.PolicyNone:
			f.Found += ": monitoring only, receivers do not act on failures"
		case dmarc.PolicyQuarantine:
			f.Found += ": failing mail goes to spam"
		case dmarc.PolicyReject:
			f.Found += ": failing mail is refused"
		}
	}
	r.add(f)

	// SPF alignment (aspf) needs no test: mailroute's envelope sender is
	// at the sender domain itself, aligned in either mode, unless the
	// relay replaces it, which no mode helps with.
	var adkim dmarc.AlignmentMode = dmarc.AlignmentRelaxed
	if rec != nil && rec.DKIMAlignment != "" {
		adkim = rec.DKIMAlignment
	}
	dkim := r.dkimAlignment(adkim)
	if r.in.Hostname != "" {
		spf := tri(r.spfPass, r.spfRecord != "" && len(r.ips) > 0)
		r.alignment(Direct, dkim, spf, "SPF passes for "+d+" from the direct addresses", policy, rec != nil)
	}
	if r.in.Relay != "" {
		if r.brokenByRelay && dkim.aligned {
			dkim = dkimState{why: "DKIM broken by the relay (see relay)"}
		}
		spf := r.relayInSPF
		if r.relay != nil && r.relay.OwnEnvelope != "" {
			spf = -1
		}
		r.alignment(Smarthost, dkim, spf, d+"'s SPF includes the relay", policy, rec != nil)
	}
}

// dkimState says whether a signature passes for a domain aligned with the
// From domain, and in words why (not).
type dkimState struct {
	aligned bool
	why     string
	fix     string // what makes it aligned, when the signatures verify
}

func (r *run) dkimAlignment(adkim dmarc.AlignmentMode) dkimState {
	if len(r.in.Keys) == 0 {
		return dkimState{why: "no DKIM signature"}
	}
	var good []string
	for i, k := range r.in.Keys {
		if !r.dkimGood[i] {
			continue
		}
		if aligned(k.Domain, r.in.Domain, adkim) {
			return dkimState{aligned: true, why: "DKIM aligned (d=" + k.Domain + ")"}
		}
		good = append(good, "d="+k.Domain)
	}
	if len(good) == 0 {
		return dkimState{why: "DKIM fails (see DKIM)"}
	}
	mode := "relaxed"
	if adkim == dmarc.AlignmentStrict {
		mode = "strict"
	}
	return dkimState{
		why: "DKIM not aligned (" + join(good) + ", " + mode + " alignment)",
		fix: "Sign with d=" + r.in.Domain + " (DKIMSignature.Domain) and publish its key there.",
	}
}

// tri turns "true / false / could not tell" into 1 / -1 / 0.
func tri(v, known bool) int {
	switch {
	case v:
		return 1
	case known:
		return -1
	}
	return 0
}

// alignment reports whether DMARC passes on one path.
func (r *run) alignment(p Path, dkim dkimState, spf int, spfWhy string, policy dmarc.Policy, haveRecord bool) {
	f := Finding{Check: "DMARC", Path: p, Query: "alignment with From: @" + r.in.Domain}
	parts := []string{dkim.why}
	switch spf {
	case 1:
		parts = append(parts, "SPF aligned ("+spfWhy+")")
	case -1:
		parts = append(parts, "SPF not aligned")
	default:
		parts = append(parts, "SPF could not be told")
	}
	f.Found = strings.Join(parts, ", ")
	fix := "Sign with DKIM for " + r.in.Domain + " (Config.DKIM) and publish the key: it aligns on every path."
	keysBad := len(r.in.Keys) > 0 && !slices.Contains(r.dkimGood, true)
	switch {
	case dkim.fix != "":
		fix = dkim.fix
	case keysBad && r.brokenByRelay && p == Smarthost:
		fix = "Correct what the DKIM findings say, and stop signing the fields the relay rewrites (see relay)."
	case r.brokenByRelay && p == Smarthost:
		fix = "Stop signing the fields the relay rewrites (see relay)."
	case keysBad:
		fix = "Correct what the DKIM findings say: a signature that verifies for " + r.in.Domain + " aligns on every path."
	}
	switch {
	case dkim.aligned || spf == 1:
		f.Found += ": DMARC passes"
		if !haveRecord {
			f.Found += " (once a DMARC record exists)"
		}
	case spf == 0:
		f.Status = Warning
		f.Found += ": DMARC may fail"
		f.Fix = fix
	default:
		f.Status = Problem
		f.Found += ": DMARC fails"
		if policy == dmarc.PolicyQuarantine || policy == dmarc.PolicyReject {
			f.Found += ", and p=" + string(policy) + " sends this mail to spam or refuses it"
		}
		f.Fix = fix
	}
	r.add(f)
}

// lookupDMARC reads _dmarc.domain. rec is nil with OK when there is no
// record, nil with another status (and found saying why) when the record
// is broken or the lookup failed.
func (r *run) lookupDMARC(domain string) (rec *dmarc.Record, at string, status Status, found string) {
	txts, err := r.in.Resolver.LookupTXT(r.ctx, "_dmarc."+domain)
	if err != nil && !notFound(err) {
		return nil, domain, Warning, lookupFailed(err)
	}
	var recs []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=DMARC1") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return nil, domain, OK, ""
	case 1:
	default:
		return nil, domain, Problem, fmt.Sprintf("%d DMARC records at _dmarc.%s: receivers ignore them all (RFC 7489 §6.6.3)", len(recs), domain)
	}
	rec, err = dmarc.Parse(recs[0])
	if err != nil {
		return nil, domain, Problem, "the DMARC record does not parse (" + err.Error() + "): " + recs[0]
	}
	return rec, domain, OK, ""
}

// orgDomain is the organisational domain (RFC 7489 §3.2): one label below
// the public suffix.
func orgDomain(d string) string {
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

// aligned reports whether a DKIM or SPF domain aligns with the From domain.
func aligned(authDomain, from string, mode dmarc.AlignmentMode) bool {
	authDomain, from = strings.ToLower(authDomain), strings.ToLower(from)
	if mode == dmarc.AlignmentStrict {
		return authDomain == from
	}
	return orgDomain(authDomain) == orgDomain(from)
}
