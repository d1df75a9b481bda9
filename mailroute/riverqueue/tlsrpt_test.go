package riverqueue_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/internal/danetest"
	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

func rptInstance(t *testing.T, name string, pool *pgxpool.Pool, dns *dnstest.Server, port int) *mailroute.Mailer {
	t.Helper()
	m, err := mailroute.New(mailroute.Config{
		Hostname: name,
		Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}},
		Resolver: mailroute.DNSServer(dns.Addr),
		Direct:   mailroute.DirectOptions{Port: port, DANEResolver: dns.Addr},
		Queue:    &riverqueue.Store{Pool: pool, ClientID: name},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// counts is a report's sessions of domain today: successes and failures.
func counts(t *testing.T, m *mailroute.Mailer, domain string) (ok, failed int64) {
	t.Helper()
	r := m.TLSReport(domain, mailroute.TLSReportOptions{Day: time.Now()})
	if r == nil {
		return -1, -1
	}
	for _, p := range r.Policies {
		ok += p.Summary.Successful
		failed += p.Summary.Failed
	}
	return ok, failed
}

// Two instances on one PostgreSQL database each count their DANE
// sessions; once they have closed (saving their counts), any instance —
// a third, started afterwards — reports their sum, and a live instance
// sees the other's saved counts beside its own.
func TestTLSReportAddsUpInstances(t *testing.T) {
	pool := newDB(t)
	ctx := context.Background()
	if err := (&riverqueue.Store{Pool: pool}).Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	dns, port := danetest.Pair(t)
	a := rptInstance(t, "a.sender.test", pool, dns, port)
	b := rptInstance(t, "b.sender.test", pool, dns, port)
	for i, m := range []*mailroute.Mailer{a, b, b} {
		res, _ := m.Send(ctx, "s@sender.test", []string{"tlsrpt" + strconv.Itoa(i) + "@good.test", "tlsrpt" + strconv.Itoa(i) + "@bad.test"},
			strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
		if res == nil || res.Recipients[0].Status != mailroute.Delivered || res.Recipients[1].Status != mailroute.Queued {
			t.Fatalf("send %d: %+v", i, res)
		}
	}
	if ok, failed := counts(t, a, "bad.test"); ok != 0 || failed != 1 {
		t.Errorf("a, nothing saved yet: %d ok, %d failed", ok, failed)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, failed := counts(t, a, "bad.test"); ok != 0 || failed != 3 {
		t.Errorf("a once b closed: %d ok, %d failed; want b's 2 and a's 1", ok, failed)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	c := rptInstance(t, "c.sender.test", pool, dns, port)
	if got := strings.Join(c.TLSReportDomains(time.Now()), ","); got != "bad.test,good.test" {
		t.Errorf("domains: %q", got)
	}
	if ok, failed := counts(t, c, "good.test"); ok != 2 || failed != 0 {
		t.Errorf("good.test: %d ok, %d failed; want one session per instance", ok, failed)
	}
	if ok, failed := counts(t, c, "bad.test"); ok != 0 || failed != 3 {
		t.Errorf("bad.test: %d ok, %d failed", ok, failed)
	}
	r := c.TLSReport("bad.test", mailroute.TLSReportOptions{Day: time.Now()})
	if d := r.Policies[0].FailureDetails; len(d) != 1 || d[0].ReceivingMXHostname != "mx.bad.test" || d[0].FailedSessionCount != 3 {
		t.Errorf("details: %+v", d)
	}
}
