package riverqueue_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// A tarpitting MX that never answers the final dot, and two instances on
// one database whose Store grants 2-second leases: the instance holding
// the message stops its attempt before the lease ends (at 90% of it) and
// saves the deferral, so the other never starts the same message. Before,
// the attempt outlived its lease and the second instance sent it again.
func TestAttemptEndsBeforeRiverLease(t *testing.T) {
	pool := newDB(t)
	if err := (&riverqueue.Store{Pool: pool}).Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	var data atomic.Int64
	tarpit := make(chan struct{})
	mx := smtptest.Start(t, smtptest.Options{DataPolicy: func(*smtptest.Message) *smtp.SMTPError {
		data.Add(1)
		<-tarpit
		return nil
	}})
	defer close(tarpit) // before the MX's cleanup, which waits for its sessions
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	dns.MX("dest.test", "mx.dest.test").Host("mx.dest.test", "127.0.0.1")

	var (
		mu     sync.Mutex
		events []mailroute.Event
	)
	mailer := func(name string) *mailroute.Mailer {
		m, err := mailroute.New(mailroute.Config{
			Hostname: name,
			Resolver: mailroute.DNSServer(dns.Addr),
			Direct:   mailroute.DirectOptions{Port: mx.Port(), TLS: mailroute.NoTLS},
			Queue:    &riverqueue.Store{Pool: pool, LeaseTimeout: 2 * time.Second, ClientID: name},
			Retry:    mailroute.RetryPolicy{FirstRetry: time.Hour, Jitter: -1},
			OnEvent: func(ev mailroute.Event) {
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	a, _ := mailer("a.test"), mailer("b.test")
	if _, err := a.Enqueue(context.Background(), "app@sender.test", []string{"tarpit@dest.test"}, strings.NewReader("Subject: t\r\n\r\nt\r\n")); err != nil {
		t.Fatal(err)
	}
	deferred := func() []mailroute.Event {
		mu.Lock()
		defer mu.Unlock()
		var out []mailroute.Event
		for _, ev := range events {
			if ev.Kind == mailroute.EventDeferred || ev.Kind == mailroute.EventNotSaved {
				out = append(out, ev)
			}
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(deferred()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := deferred()
	if len(got) != 1 || got[0].Kind != mailroute.EventDeferred || !strings.Contains(got[0].Err.Error(), "before its lease ran out") {
		t.Fatalf("events %+v, want one deferral by the lease's cut-off", got)
	}
	// Give the other instance every chance to take the message: past the
	// lease's end and a few of its polls (a second each).
	time.Sleep(3 * time.Second)
	if n := data.Load(); n != 1 {
		t.Fatalf("the MX saw %d transactions reach the final dot, want 1: another instance took over a live attempt", n)
	}
	l, err := a.QueueList(context.Background())
	if err != nil || len(l) != 1 || l[0].Recipients[0].Attempts != 1 || !l[0].Recipients[0].NextAttempt.Equal(got[0].NextAttempt) {
		t.Fatalf("stored %+v, %v; want the deferral saved with the event's next attempt %v", l, err, got[0].NextAttempt)
	}
	if n := len(deferred()); n != 1 {
		t.Errorf("%d deferral or not-saved events, want 1", n)
	}
}
