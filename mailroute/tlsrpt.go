package mailroute

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mailroute/go-mailroute/internal/mtasts"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// tlsReporter counts TLS sessions per policy domain, policy and hour, for
// RFC 8460 aggregate reports. Counts live in memory for two days: a
// report covers one UTC day and is made soon after it ends.
type tlsReporter struct {
	now func() time.Time

	mu      sync.Mutex
	buckets map[rptBucketKey]*rptBucket
}

// rptPolicy is the "policy" object of a report.
type rptPolicy struct {
	Type    string // "tlsa", "sts" or "no-policy-found"
	Domain  string
	Strings []string
	MXHost  []string
}

func (p *rptPolicy) key() string {
	return p.Type + "\x00" + p.Domain + "\x00" + strings.Join(p.Strings, "\x01") + "\x00" + strings.Join(p.MXHost, "\x01")
}

// rptTarget is what one session is counted against.
type rptTarget struct {
	domain string
	policy rptPolicy
	mx     string
}

type rptBucketKey struct {
	domain string
	policy string
	hour   int64 // Unix hours
}

type rptBucket struct {
	policy   rptPolicy
	success  int64
	failures map[rptFailureKey]int64
}

type rptFailureKey struct {
	resultType, mx, reason string
}

// rptKeep is how long counts are kept.
const rptKeep = 48 * time.Hour

func (r *tlsReporter) bucket(t *rptTarget) *rptBucket {
	now := r.now()
	k := rptBucketKey{domain: t.domain, policy: t.policy.key(), hour: now.Unix() / 3600}
	if r.buckets == nil {
		r.buckets = make(map[rptBucketKey]*rptBucket)
	}
	b := r.buckets[k]
	if b == nil {
		r.prune(now)
		b = &rptBucket{policy: t.policy, failures: make(map[rptFailureKey]int64)}
		r.buckets[k] = b
	}
	return b
}

// prune drops buckets past rptKeep; it runs when a new hour's bucket is
// made, so at most once an hour per policy.
func (r *tlsReporter) prune(now time.Time) {
	oldest := now.Add(-rptKeep).Unix() / 3600
	for k := range r.buckets {
		if k.hour < oldest {
			delete(r.buckets, k)
		}
	}
}

// success counts a session that met its policy.
func (r *tlsReporter) success(t *rptTarget) {
	if t == nil {
		return
	}
	r.mu.Lock()
	r.bucket(t).success++
	r.mu.Unlock()
}

// failure counts a session, or an MX host, that failed its policy, with an
// RFC 8460 §4.3 result type.
func (r *tlsReporter) failure(t *rptTarget, resultType string, err error) {
	if t == nil {
		return
	}
	reason := ""
	if err != nil {
		reason = err.Error()
		if len(reason) > 200 {
			reason = reason[:200]
		}
	}
	r.mu.Lock()
	r.bucket(t).failures[rptFailureKey{resultType: resultType, mx: t.mx, reason: reason}]++
	r.mu.Unlock()
}

// policyFailure counts a policy that could not be had (an MTA-STS fetch
// that failed): RFC 8460 reports it under the policy type sts.
func (r *tlsReporter) policyFailure(domain, resultType string, err error) {
	r.failure(&rptTarget{domain: domain, policy: rptPolicy{Type: "sts", Domain: domain}}, resultType, err)
}

// reportSession records a dial's TLS outcome under its policy.
func (r *tlsReporter) reportSession(h *hostTLS, c *smtpclient.Conn, err error) {
	if h.report == nil {
		return
	}
	if err != nil {
		if errors.Is(err, smtpclient.ErrTLSUnavailable) {
			r.failure(h.report, "starttls-not-supported", err)
		} else if errors.Is(err, smtpclient.ErrTLSFailed) {
			r.failure(h.report, resultTypeOf(err), err)
		}
		return // no SMTP session: not a TLS outcome
	}
	if !c.IsTLS() {
		r.failure(h.report, "starttls-not-supported", nil)
		return
	}
	if !h.selfReported {
		r.success(h.report)
	}
}

// resultTypeOf maps a certificate failure to an RFC 8460 §4.3.1 result
// type.
func resultTypeOf(err error) string {
	var he x509.HostnameError
	var ie x509.CertificateInvalidError
	var ue x509.UnknownAuthorityError
	switch {
	case errors.As(err, &he):
		return "certificate-host-mismatch"
	case errors.As(err, &ie) && ie.Reason == x509.Expired:
		return "certificate-expired"
	case errors.As(err, &ue):
		return "certificate-not-trusted"
	}
	return "validation-failure"
}

func tlsaStrings(rs []*dns.TLSA) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = fmt.Sprintf("%d %d %d %s", r.Usage, r.Selector, r.MatchingType, r.Certificate)
	}
	return out
}

func stsStrings(p *mtasts.Policy) []string {
	return strings.Split(strings.TrimSuffix(p.String(), "\r\n"), "\r\n")
}

// TLSReport is an RFC 8460 aggregate report, to be serialised with
// encoding/json, gzipped and sent to the addresses the domain publishes
// (see TLSReportAddresses).
type TLSReport struct {
	OrganizationName string            `json:"organization-name"`
	DateRange        TLSReportRange    `json:"date-range"`
	ContactInfo      string            `json:"contact-info"`
	ReportID         string            `json:"report-id"`
	Policies         []TLSReportPolicy `json:"policies"`
}

// TLSReportRange is the period a report covers.
type TLSReportRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// TLSReportPolicy is one policy's outcomes.
type TLSReportPolicy struct {
	Policy         TLSReportPolicyDesc `json:"policy"`
	Summary        TLSReportSummary    `json:"summary"`
	FailureDetails []TLSReportFailure  `json:"failure-details,omitempty"`
}

// TLSReportPolicyDesc says which policy was applied.
type TLSReportPolicyDesc struct {
	Type   string   `json:"policy-type"` // "tlsa", "sts" or "no-policy-found"
	String []string `json:"policy-string,omitempty"`
	Domain string   `json:"policy-domain"`
	MXHost []string `json:"mx-host,omitempty"`
}

// TLSReportSummary counts sessions.
type TLSReportSummary struct {
	Successful int64 `json:"total-successful-session-count"`
	Failed     int64 `json:"total-failure-session-count"`
}

// TLSReportFailure is one kind of failure and how often it happened.
type TLSReportFailure struct {
	ResultType            string `json:"result-type"`
	ReceivingMXHostname   string `json:"receiving-mx-hostname,omitempty"`
	FailedSessionCount    int64  `json:"failed-session-count"`
	AdditionalInformation string `json:"additional-information,omitempty"`
}

// TLSReportOptions names the reporting organisation.
type TLSReportOptions struct {
	// Organization is the reporter's name, e.g. "Example Inc.".
	Organization string
	// Contact is where the domain may ask about the report: an address
	// or a URL.
	Contact string
	// Day is any moment of the UTC day reported. The zero value: the day
	// before the current one.
	Day time.Time
}

// TLSReport returns the RFC 8460 aggregate report of the TLS sessions this
// Mailer had, over the UTC day opts.Day, with the MX hosts of domain
// under a DANE or MTA-STS policy: successes, and failures by result type.
// It is nil when there was nothing to report. Counts are kept in memory
// for two days, so a Mailer restarted during the day reports only what
// followed. Sending the report (RFC 8460 §5: gzip, to each rua of
// TLSReportAddresses) is the application's call; examples/tlsrpt shows
// how.
func (m *Mailer) TLSReport(domain string, opts TLSReportOptions) *TLSReport {
	day := opts.Day
	if day.IsZero() {
		day = m.now().Add(-24 * time.Hour)
	}
	start := time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, time.UTC)
	if day.Location() != time.UTC {
		u := day.UTC()
		start = time.Date(u.Year(), u.Month(), u.Day(), 0, 0, 0, 0, time.UTC)
	}
	end := start.Add(24 * time.Hour)
	from, to := start.Unix()/3600, end.Unix()/3600

	m.tlsrpt.mu.Lock()
	byPolicy := make(map[string]*TLSReportPolicy)
	fails := make(map[string]map[rptFailureKey]int64)
	for k, b := range m.tlsrpt.buckets {
		if k.domain != domain || k.hour < from || k.hour >= to {
			continue
		}
		p := byPolicy[k.policy]
		if p == nil {
			p = &TLSReportPolicy{Policy: TLSReportPolicyDesc{Type: b.policy.Type, String: b.policy.Strings, Domain: b.policy.Domain, MXHost: b.policy.MXHost}}
			byPolicy[k.policy] = p
			fails[k.policy] = make(map[rptFailureKey]int64)
		}
		p.Summary.Successful += b.success
		for fk, n := range b.failures {
			p.Summary.Failed += n
			fails[k.policy][fk] += n
		}
	}
	m.tlsrpt.mu.Unlock()
	if len(byPolicy) == 0 {
		return nil
	}
	keys := make([]string, 0, len(byPolicy))
	for k := range byPolicy {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	r := &TLSReport{
		OrganizationName: opts.Organization,
		DateRange:        TLSReportRange{Start: start, End: end.Add(-time.Second)},
		ContactInfo:      opts.Contact,
		ReportID:         start.Format("2006-01-02") + "_" + domain + "@" + m.hostname,
	}
	for _, k := range keys {
		p := byPolicy[k]
		for fk, n := range fails[k] {
			p.FailureDetails = append(p.FailureDetails, TLSReportFailure{
				ResultType: fk.resultType, ReceivingMXHostname: fk.mx, FailedSessionCount: n, AdditionalInformation: fk.reason,
			})
		}
		sort.Slice(p.FailureDetails, func(i, j int) bool {
			a, b := p.FailureDetails[i], p.FailureDetails[j]
			if a.ResultType != b.ResultType {
				return a.ResultType < b.ResultType
			}
			if a.ReceivingMXHostname != b.ReceivingMXHostname {
				return a.ReceivingMXHostname < b.ReceivingMXHostname
			}
			return a.AdditionalInformation < b.AdditionalInformation
		})
		r.Policies = append(r.Policies, *p)
	}
	return r
}

// TLSReportDomains lists the policy domains with sessions counted over
// the UTC day of day (zero: yesterday), for which TLSReport has
// something to say.
func (m *Mailer) TLSReportDomains(day time.Time) []string {
	if day.IsZero() {
		day = m.now().Add(-24 * time.Hour)
	}
	u := day.UTC()
	start := time.Date(u.Year(), u.Month(), u.Day(), 0, 0, 0, 0, time.UTC)
	from, to := start.Unix()/3600, start.Add(24*time.Hour).Unix()/3600
	seen := make(map[string]bool)
	m.tlsrpt.mu.Lock()
	for k := range m.tlsrpt.buckets {
		if k.hour >= from && k.hour < to {
			seen[k.domain] = true
		}
	}
	m.tlsrpt.mu.Unlock()
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// TLSReportAddresses returns where a domain wants its TLS reports: the
// rua URIs ("mailto:…", "https://…") of its _smtp._tls TXT record (RFC
// 8460 §3). A domain without one wants none; the error is nil then and
// the list empty. The Resolver must answer TXT lookups (DNSServer and
// *net.Resolver do).
func (m *Mailer) TLSReportAddresses(ctx context.Context, domain string) ([]string, error) {
	var txt func(context.Context, string) ([]string, error)
	if tr, ok := m.cfg.Resolver.(interface {
		LookupTXT(ctx context.Context, name string) ([]string, error)
	}); ok {
		txt = tr.LookupTXT
	} else if m.cfg.Resolver == nil {
		txt = defaultLookupTXT
	} else {
		return nil, errors.New("mailroute: TLSReportAddresses: the Resolver does not answer TXT lookups")
	}
	recs, err := txt(ctx, "_smtp._tls."+domain)
	if err != nil {
		var de interface{ Temporary() bool }
		if errors.As(err, &de) && de.Temporary() {
			return nil, err
		}
		return nil, nil
	}
	var found []string
	for _, r := range recs {
		if strings.HasPrefix(r, "v=TLSRPTv1") {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		return nil, nil // none, or ambiguous: RFC 8460 §3 says no reports
	}
	return parseTLSRPT(found[0])
}

// parseTLSRPT reads "v=TLSRPTv1; rua=mailto:a@b,https://c/d".
func parseTLSRPT(rec string) ([]string, error) {
	fields := strings.Split(rec, ";")
	if strings.TrimSpace(fields[0]) != "v=TLSRPTv1" {
		return nil, fmt.Errorf("mailroute: TLS-RPT record %q: not v=TLSRPTv1", rec)
	}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok || strings.TrimSpace(k) != "rua" {
			continue
		}
		var out []string
		for _, u := range strings.Split(v, ",") {
			u = strings.TrimSpace(u)
			if strings.HasPrefix(u, "mailto:") || strings.HasPrefix(u, "https://") {
				out = append(out, u)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("mailroute: TLS-RPT record %q: no mailto: or https: rua", rec)
		}
		return out, nil
	}
	return nil, fmt.Errorf("mailroute: TLS-RPT record %q: no rua", rec)
}
