package mailroute

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// validateTLSRPT checks a report against RFC 8460 §4.4's JSON schema: the
// required fields, their types, the enumerations, the date format, and no
// field the RFC does not define.
func validateTLSRPT(raw []byte) error {
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return err
	}
	if err := fields(doc, []string{"organization-name", "date-range", "contact-info", "report-id", "policies"}, nil); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	for _, k := range []string{"organization-name", "contact-info", "report-id"} {
		if _, ok := doc[k].(string); !ok {
			return fmt.Errorf("%s is not a string", k)
		}
	}
	dr, ok := doc["date-range"].(map[string]any)
	if !ok {
		return fmt.Errorf("date-range is not an object")
	}
	if err := fields(dr, []string{"start-datetime", "end-datetime"}, nil); err != nil {
		return fmt.Errorf("date-range: %w", err)
	}
	var times [2]time.Time
	for i, k := range []string{"start-datetime", "end-datetime"} {
		s, _ := dr[k].(string)
		t, err := time.Parse(time.RFC3339, s) // RFC 3339 date-time
		if err != nil {
			return fmt.Errorf("%s %q: %v", k, s, err)
		}
		times[i] = t
	}
	if !times[0].Before(times[1]) {
		return fmt.Errorf("date-range ends before it starts")
	}
	policies, ok := doc["policies"].([]any)
	if !ok || len(policies) == 0 {
		return fmt.Errorf("policies is not a non-empty array")
	}
	resultTypes := []string{"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
		"certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required",
		"sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"}
	for i, p := range policies {
		po, ok := p.(map[string]any)
		if !ok {
			return fmt.Errorf("policies[%d] is not an object", i)
		}
		if err := fields(po, []string{"policy", "summary"}, []string{"failure-details"}); err != nil {
			return fmt.Errorf("policies[%d]: %w", i, err)
		}
		pol, _ := po["policy"].(map[string]any)
		if err := fields(pol, []string{"policy-type", "policy-domain"}, []string{"policy-string", "mx-host"}); err != nil {
			return fmt.Errorf("policies[%d].policy: %w", i, err)
		}
		if pt, _ := pol["policy-type"].(string); !slices.Contains([]string{"tlsa", "sts", "no-policy-found"}, pt) {
			return fmt.Errorf("policy-type %q", pt)
		}
		for _, k := range []string{"policy-string", "mx-host"} {
			if v, ok := pol[k]; ok {
				arr, ok := v.([]any)
				if !ok {
					return fmt.Errorf("%s is not an array", k)
				}
				for _, s := range arr {
					if _, ok := s.(string); !ok {
						return fmt.Errorf("%s holds a non-string", k)
					}
				}
			}
		}
		sum, _ := po["summary"].(map[string]any)
		if err := fields(sum, []string{"total-successful-session-count", "total-failure-session-count"}, nil); err != nil {
			return fmt.Errorf("summary: %w", err)
		}
		failed := 0.0
		for _, k := range []string{"total-successful-session-count", "total-failure-session-count"} {
			if n, ok := sum[k].(float64); !ok || n < 0 || n != float64(int64(n)) {
				return fmt.Errorf("%s is not a non-negative integer", k)
			}
		}
		if fd, ok := po["failure-details"]; ok {
			arr, ok := fd.([]any)
			if !ok {
				return fmt.Errorf("failure-details is not an array")
			}
			for j, d := range arr {
				do, _ := d.(map[string]any)
				if err := fields(do, []string{"result-type", "failed-session-count"}, []string{"sending-mta-ip", "receiving-mx-hostname",
					"receiving-mx-helo", "receiving-ip", "additional-information", "failure-reason-code"}); err != nil {
					return fmt.Errorf("failure-details[%d]: %w", j, err)
				}
				if rt, _ := do["result-type"].(string); !slices.Contains(resultTypes, rt) {
					return fmt.Errorf("result-type %q", rt)
				}
				n, ok := do["failed-session-count"].(float64)
				if !ok || n < 1 {
					return fmt.Errorf("failed-session-count %v", do["failed-session-count"])
				}
				failed += n
			}
		}
		if failed != sum["total-failure-session-count"].(float64) {
			return fmt.Errorf("failure details add up to %v, the summary says %v", failed, sum["total-failure-session-count"])
		}
	}
	return nil
}

// fields checks that o has every required key and no key outside
// required and optional.
func fields(o map[string]any, required, optional []string) error {
	if o == nil {
		return fmt.Errorf("not an object")
	}
	for _, k := range required {
		if _, ok := o[k]; !ok {
			return fmt.Errorf("no %q", k)
		}
	}
	for k := range o {
		if !slices.Contains(required, k) && !slices.Contains(optional, k) {
			return fmt.Errorf("unknown field %q", k)
		}
	}
	return nil
}

func TestValidateTLSRPTRejects(t *testing.T) {
	// The validator must be able to fail: RFC 8460's own example passes,
	// and broken copies of it do not.
	good := `{"organization-name":"Company-X","date-range":{"start-datetime":"2016-04-01T00:00:00Z","end-datetime":"2016-04-01T23:59:59Z"},
	"contact-info":"sts-reporting@company-x.example","report-id":"5065427c-23d3-47ca-b6e0-946ea0e8c4be",
	"policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: testing","mx: *.mail.company-y.example","max_age: 86400"],
	"policy-domain":"company-y.example","mx-host":["*.mail.company-y.example"]},
	"summary":{"total-successful-session-count":5326,"total-failure-session-count":303},
	"failure-details":[{"result-type":"certificate-expired","sending-mta-ip":"2001:db8:abcd:0012::1","receiving-mx-hostname":"mx1.mail.company-y.example","failed-session-count":100},
	{"result-type":"starttls-not-supported","sending-mta-ip":"2001:db8:abcd:0013::1","receiving-mx-hostname":"mx2.mail.company-y.example","receiving-ip":"203.0.113.56","failed-session-count":200,"additional-information":"https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported"},
	{"result-type":"validation-failure","sending-mta-ip":"198.51.100.62","receiving-ip":"203.0.113.58","receiving-mx-hostname":"mx-backup.mail.company-y.example","failed-session-count":3,"failure-reason-code":"X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"}]}]}`
	if err := validateTLSRPT([]byte(good)); err != nil {
		t.Fatalf("RFC 8460's example: %v", err)
	}
	for _, bad := range []struct{ from, to string }{
		{`"policy-type":"sts"`, `"policy-type":"mta-sts"`},
		{`"result-type":"certificate-expired"`, `"result-type":"expired"`},
		{`"organization-name":"Company-X",`, ``},
		{`"total-failure-session-count":303`, `"total-failure-session-count":302`},
		{`"start-datetime":"2016-04-01T00:00:00Z"`, `"start-datetime":"2016-04-01"`},
		{`"report-id"`, `"report_id"`},
	} {
		if err := validateTLSRPT([]byte(strings.Replace(good, bad.from, bad.to, 1))); err == nil {
			t.Errorf("%s → %s passed", bad.from, bad.to)
		}
	}
}

// The report of a day with MTA-STS successes and failures, DANE failures
// and a policy fetch that failed is valid RFC 8460 JSON and counts each.
func TestTLSReport(t *testing.T) {
	w := newTLSWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{TLS: w.ca.ServerConfig("mx.dest.test")})
	w.mx("mx.other.test", "127.0.0.2", smtptest.Options{TLS: w.ca.ServerConfig("mx.wrong.test")})
	w.dns.MX("dest.test", "mx.dest.test")
	w.dns.MX("other.test", "mx.other.test")
	w.sts("dest.test", "1", "enforce", "mx.dest.test")
	w.sts("other.test", "1", "enforce", "mx.other.test")
	w.dns.Add(`_smtp._tls.other.test. TXT "v=TLSRPTv1; rua=mailto:tls@other.test,https://rpt.other.test/v1"`)
	clock := newFakeClock()
	m := w.mailer(Config{now: clock.Now, MaxConnsPerHost: 1}, false)
	for range 2 {
		send(t, m, "a@sender.test", []string{"b@dest.test", "c@other.test"}, testBody)
	}
	if got := m.TLSReportDomains(clock.Now()); strings.Join(got, ",") != "dest.test,other.test" {
		t.Errorf("domains %v", got)
	}
	for _, domain := range []string{"dest.test", "other.test"} {
		r := m.TLSReport(domain, TLSReportOptions{Organization: "Sender Inc.", Contact: "tls@sender.test", Day: clock.Now()})
		if r == nil {
			t.Fatalf("%s: no report", domain)
		}
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := validateTLSRPT(raw); err != nil {
			t.Fatalf("%s: %v\n%s", domain, err, raw)
		}
		p := r.Policies[0]
		switch domain {
		case "dest.test":
			// One session, reused for the second message: RFC 8460 counts
			// sessions.
			if p.Summary.Successful != 1 || p.Summary.Failed != 0 || p.Policy.Type != "sts" || p.Policy.MXHost[0] != "mx.dest.test" {
				t.Errorf("dest.test: %s", raw)
			}
		case "other.test":
			if p.Summary.Successful != 0 || p.Summary.Failed != 2 || p.FailureDetails[0].ResultType != "certificate-host-mismatch" ||
				p.FailureDetails[0].ReceivingMXHostname != "mx.other.test" {
				t.Errorf("other.test: %s", raw)
			}
		}
	}
	if r := m.TLSReport("dest.test", TLSReportOptions{Day: clock.Now().Add(-24 * time.Hour)}); r != nil {
		t.Errorf("a report for a day without sessions: %+v", r)
	}
	rua, err := m.TLSReportAddresses(context.Background(), "other.test")
	if err != nil || strings.Join(rua, " ") != "mailto:tls@other.test https://rpt.other.test/v1" {
		t.Errorf("rua %v, %v", rua, err)
	}
	if rua, err := m.TLSReportAddresses(context.Background(), "dest.test"); err != nil || len(rua) != 0 {
		t.Errorf("a domain without _smtp._tls: %v, %v", rua, err)
	}
}

func TestParseTLSRPT(t *testing.T) {
	for _, tt := range []struct {
		rec  string
		want string // "" = error
	}{
		{"v=TLSRPTv1; rua=mailto:a@b.example", "mailto:a@b.example"},
		{"v=TLSRPTv1;rua=mailto:a@b.example, https://r.example/x", "mailto:a@b.example https://r.example/x"},
		{"v=TLSRPTv1; rua=ftp://x", ""},
		{"v=TLSRPTv1;", ""},
		{"v=TLSRPTv2; rua=mailto:a@b", ""},
	} {
		got, err := parseTLSRPT(tt.rec)
		if (err == nil) != (tt.want != "") || strings.Join(got, " ") != tt.want {
			t.Errorf("%q: %v, %v; want %q", tt.rec, got, err, tt.want)
		}
	}
}
