package spool_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/danetest"
	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// daneWorld has two DANE domains on loopback TLS servers: good.test,
// whose TLSA record matches its MX's key, and bad.test, whose does not.
type daneWorld struct {
	dns  *dnstest.Server
	port int
}

func newDANEWorld(t *testing.T) *daneWorld {
	dns, port := danetest.Pair(t)
	return &daneWorld{dns: dns, port: port}
}

func (w *daneWorld) mailer(t *testing.T, store mailroute.QueueStore) *mailroute.Mailer {
	t.Helper()
	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.sender.test",
		Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}},
		Resolver: mailroute.DNSServer(w.dns.Addr),
		Direct:   mailroute.DirectOptions{Port: w.port, DANEResolver: w.dns.Addr},
		Queue:    store,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// A Mailer on a spool.Store counts DANE successes and failures, closes,
// and a new Mailer on the same directory reports the same counts; it
// then adds its own.
func TestTLSReportSurvivesRestart(t *testing.T) {
	w := newDANEWorld(t)
	dir := t.TempDir()
	sa := &spool.Store{Dir: dir}
	a := w.mailer(t, sa)
	for range 2 {
		res, _ := send(a, "a@sender.test", []string{"x@good.test", "y@bad.test"}, testBody)
		wantStatus(t, res, "x@good.test", mailroute.Delivered)
		wantStatus(t, res, "y@bad.test", mailroute.Queued)
	}
	today := time.Now()
	want := map[string]string{}
	for _, d := range []string{"good.test", "bad.test"} {
		r := a.TLSReport(d, mailroute.TLSReportOptions{Day: today})
		if r == nil {
			t.Fatalf("%s: no report", d)
		}
		b, _ := json.Marshal(r.Policies)
		want[d] = string(b)
	}
	if s := want["good.test"]; !strings.Contains(s, `"total-successful-session-count":1,"total-failure-session-count":0`) {
		t.Errorf("good.test: %s", s) // one session, pooled for the second message
	}
	if s := want["bad.test"]; !strings.Contains(s, `"total-successful-session-count":0,"total-failure-session-count":2`) ||
		!strings.Contains(s, `"receiving-mx-hostname":"mx.bad.test","failed-session-count":2`) {
		t.Errorf("bad.test: %s", s)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sa.Close(); err != nil { // as the process ends: the directory is free
		t.Fatal(err)
	}

	sb := &spool.Store{Dir: dir}
	b := w.mailer(t, sb)
	if got := strings.Join(b.TLSReportDomains(today), ","); got != "bad.test,good.test" {
		t.Errorf("domains after the restart: %q", got)
	}
	for d, raw := range want {
		r := b.TLSReport(d, mailroute.TLSReportOptions{Day: today})
		if r == nil {
			t.Fatalf("%s after the restart: no report", d)
		}
		if got, _ := json.Marshal(r.Policies); string(got) != raw {
			t.Errorf("%s after the restart:\n got %s\nwant %s", d, got, raw)
		}
	}
	res, _ := send(b, "a@sender.test", []string{"z@good.test"}, testBody)
	wantStatus(t, res, "z@good.test", mailroute.Delivered)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	sc := &spool.Store{Dir: dir}
	t.Cleanup(func() { sc.Close() })
	c := w.mailer(t, sc)
	r := c.TLSReport("good.test", mailroute.TLSReportOptions{Day: today})
	if r == nil || r.Policies[0].Summary.Successful != 2 {
		t.Errorf("good.test after two runs: %+v", r)
	}
}
