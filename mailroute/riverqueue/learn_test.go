package riverqueue_test

import (
	"context"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// learner is an instance whose Store keeps what its Mailer learns.
func learner(t *testing.T, name string, pool *pgxpool.Pool, dnsAddr string, port int, relay string) *mailroute.Mailer {
	t.Helper()
	m, err := mailroute.New(mailroute.Config{
		Hostname: name,
		Resolver: mailroute.DNSServer(dnsAddr),
		Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}},
		Direct:   mailroute.DirectOptions{Port: port, TLS: mailroute.NoTLS},
		Relay:    &mailroute.Relay{Addr: relay, InsecurePlaintextLoopback: true},
		Queue:    &riverqueue.Store{Pool: pool, ClientID: name},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// A route learned by one instance is applied by another on the same
// database — and by an instance started afterwards — and forgotten by
// all when one forgets it.
func TestLessonSharedByInstances(t *testing.T) {
	pool := newDB(t)
	ctx := context.Background()
	if err := (&riverqueue.Store{Pool: pool}).Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	mx := smtptest.Start(t, smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: "Unfortunately, messages from [127.0.0.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150)."}
	}})
	relay := smtptest.Start(t, smtptest.Options{})
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	dns.Host("mx.site.test", "127.0.0.1")
	dns.MX("one.test", "mx.site.test")
	dns.MX("two.test", "mx.site.test")

	a := learner(t, "a.sender.test", pool, dns.Addr, mx.Port(), relay.Addr)
	b := learner(t, "b.sender.test", pool, dns.Addr, mx.Port(), relay.Addr)

	res, _ := a.Send(ctx, "s@sender.test", []string{"x@one.test"}, strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
	if r := res.Recipients[0]; r.Status != mailroute.Delivered || !r.Fallback {
		t.Fatalf("a: %+v", r)
	}
	res, err = b.Send(ctx, "s@sender.test", []string{"y@two.test"}, strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Recipients[0]; r.Via != mailroute.Relayed || r.Fallback || !strings.Contains(r.Route.Reason, `policy: "S3150"`) {
		t.Errorf("b did not apply a's lesson: %+v", r)
	}
	if strings.Contains(string(mx.Transcript()), "y@two.test") {
		t.Error("the refusing MX was offered b's recipient")
	}

	c := learner(t, "c.sender.test", pool, dns.Addr, mx.Port(), relay.Addr)
	if route, err := c.Route(ctx, "two.test"); err != nil || route.Via != mailroute.Relayed {
		t.Errorf("a new instance's dry run: %+v, %v", route, err)
	}
	if err := c.Forget(ctx, "one.test"); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*mailroute.Mailer{a, b, c} {
		if lessons, err := m.Lessons(ctx); err != nil || len(lessons) != 0 {
			t.Errorf("after Forget: %+v, %v", lessons, err)
		}
	}
}
