package queuetest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/mailroute"
)

// The Mailer-level schedule tests: the Mailer's clock is the real one, so
// the RetryPolicy is in milliseconds and the workers' own poll (a second)
// sets the pace.
func runMailer(t *testing.T, newStore func(t *testing.T) mailroute.QueueStore) {
	t.Run("FlushDuringAttempt", func(t *testing.T) {
		t.Parallel()
		testFlushDuringAttempt(t, newStore(t))
	})
	t.Run("RetryAfterDeferral", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, newStore(t), func(n int, rcpt string) *smtp.SMTPError {
			if n == 1 {
				return greylisted
			}
			return nil
		}, mailroute.Config{})
		res, err := w.m.Send(context.Background(), "a@sender.test", []string{"grey@dest.test"}, strings.NewReader(body1))
		if err != nil {
			t.Fatalf("Send: %v (a queued recipient is not an error)", err)
		}
		if st := res.Recipients[0].Status; st != mailroute.Queued {
			t.Fatalf("status %v, want Queued", st)
		}
		ev := w.waitFinal(t, "grey@dest.test")
		if ev.Kind != mailroute.EventDelivered || ev.Attempt != 2 {
			t.Fatalf("final event %+v", ev)
		}
		if got := w.kinds("grey@dest.test"); got != "queued,delivered" {
			t.Errorf("events %s", got)
		}
		msgs := w.mx.Messages()
		if len(msgs) != 1 || string(msgs[0].Data) != body1 {
			t.Errorf("the MX got %d messages", len(msgs))
		}
		w.waitEmpty(t)
	})
	t.Run("FallbackAfterN", func(t *testing.T) {
		t.Parallel()
		relay := smtptest.Start(t, smtptest.Options{})
		w := newWorld(t, newStore(t), func(int, string) *smtp.SMTPError { return greylisted },
			mailroute.Config{Relay: &mailroute.Relay{Addr: relay.Addr, InsecurePlaintextLoopback: true}})
		if _, err := w.m.Enqueue(context.Background(), "a@sender.test", []string{"grey@dest.test"}, strings.NewReader(body1)); err != nil {
			t.Fatal(err)
		}
		ev := w.waitFinal(t, "grey@dest.test")
		if ev.Kind != mailroute.EventDelivered || !ev.Fallback || ev.Via != mailroute.Relayed || ev.Attempt != 3 {
			t.Fatalf("final event %+v, want delivered through the relay at the third attempt", ev)
		}
		if got := w.kinds("grey@dest.test"); got != "deferred,deferred,delivered" {
			t.Errorf("events %s", got)
		}
		if len(relay.Messages()) != 1 || len(w.mx.Messages()) != 0 {
			t.Errorf("relay got %d, MX %d", len(relay.Messages()), len(w.mx.Messages()))
		}
		w.waitEmpty(t)
	})
	t.Run("GiveUp", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, newStore(t), func(int, string) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "local problem"}
		}, mailroute.Config{Retry: mailroute.RetryPolicy{FirstRetry: 50 * time.Millisecond, MaxAge: 1500 * time.Millisecond, FallbackAfter: -1, Jitter: -1}})
		if _, err := w.m.Enqueue(context.Background(), "a@sender.test", []string{"down@dest.test"}, strings.NewReader(body1)); err != nil {
			t.Fatal(err)
		}
		ev := w.waitFinal(t, "down@dest.test")
		if ev.Kind != mailroute.EventGaveUp || ev.Attempt < 2 {
			t.Fatalf("final event %+v, want gave-up after a few attempts", ev)
		}
		w.waitEmpty(t)
	})
}

// testFlushDuringAttempt: a Flush while a worker waits for the MX's reply
// to the final dot must leave the message to the worker — the store never
// leases a message twice — so the MX gets one copy.
func testFlushDuringAttempt(t *testing.T, store mailroute.QueueStore) {
	var (
		mu      sync.Mutex
		calls   int
		reached = make(chan struct{}, 4)
		open    = make(chan struct{})
	)
	defer close(open) // before the MX's cleanup, which waits for its sessions
	w := newWorld(t, store, func(int, string) *smtp.SMTPError { return nil }, mailroute.Config{}, func(*smtptest.Message) *smtp.SMTPError {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			reached <- struct{}{}
			<-open
		}
		return nil
	})
	if _, err := w.m.Enqueue(context.Background(), "a@sender.test", []string{"busy@dest.test"}, strings.NewReader(body1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker's attempt did not reach the end of DATA in 30 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.m.Flush(ctx, ""); err != nil || ctx.Err() != nil {
		t.Fatalf("Flush: %v, ctx %v", err, ctx.Err())
	}
	open <- struct{}{} // let the worker's transaction finish (close(open) at return is then a no-op for it)
	ev := w.waitFinal(t, "busy@dest.test")
	if ev.Kind != mailroute.EventDelivered {
		t.Fatalf("final event %+v", ev)
	}
	if n := len(w.mx.Attempts()); n != 1 {
		t.Fatalf("the MX saw %d transactions, want 1: the flush took the message the worker was attempting", n)
	}
	w.waitEmpty(t)
}

var greylisted = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Greylisted, try again later"}

type world struct {
	m  *mailroute.Mailer
	mx *smtptest.Server

	mu     sync.Mutex
	events []mailroute.Event
	final  chan struct{}
}

// newWorld starts an MX for dest.test whose RCPT answer is policy(n, rcpt),
// n counting the attempts of that recipient from 1, and a Mailer on store.
// A dataPolicy, when given, answers the final dot.
func newWorld(t *testing.T, store mailroute.QueueStore, policy func(n int, rcpt string) *smtp.SMTPError, cfg mailroute.Config, dataPolicy ...func(*smtptest.Message) *smtp.SMTPError) *world {
	t.Helper()
	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	w := &world{final: make(chan struct{}, 100)}
	opts := smtptest.Options{RcptPolicy: func(rcpt string) *smtp.SMTPError {
		mu.Lock()
		seen[rcpt]++
		n := seen[rcpt]
		mu.Unlock()
		return policy(n, rcpt)
	}}
	if len(dataPolicy) > 0 {
		opts.DataPolicy = dataPolicy[0]
	}
	w.mx = smtptest.Start(t, opts)
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	dns.MX("dest.test", "mx.dest.test").Host("mx.dest.test", "127.0.0.1")
	cfg.Hostname = "client.test"
	cfg.Resolver = mailroute.DNSServer(dns.Addr)
	cfg.Direct.Port = w.mx.Port()
	cfg.Direct.TLS = mailroute.NoTLS
	cfg.Queue = store
	if cfg.Retry == (mailroute.RetryPolicy{}) {
		cfg.Retry = mailroute.RetryPolicy{FirstRetry: 50 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Jitter: -1}
	}
	cfg.OnEvent = func(ev mailroute.Event) {
		w.mu.Lock()
		w.events = append(w.events, ev)
		w.mu.Unlock()
		switch ev.Kind {
		case mailroute.EventDelivered, mailroute.EventFailed, mailroute.EventGaveUp:
			w.final <- struct{}{}
		}
	}
	w.m, err = mailroute.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.m.Close() })
	return w
}

// waitFinal waits for rcpt's delivered, failed or gave-up event.
func (w *world) waitFinal(t *testing.T, rcpt string) mailroute.Event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		for _, ev := range w.events {
			if ev.Rcpt == rcpt && (ev.Kind == mailroute.EventDelivered || ev.Kind == mailroute.EventFailed || ev.Kind == mailroute.EventGaveUp) {
				w.mu.Unlock()
				return ev
			}
		}
		w.mu.Unlock()
		select {
		case <-w.final:
		case <-deadline:
			t.Fatalf("no final event for %s in 30 s; events: %s", rcpt, w.kinds(rcpt))
		}
	}
}

func (w *world) kinds(rcpt string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, ev := range w.events {
		if ev.Rcpt == rcpt {
			out = append(out, ev.Kind.String())
		}
	}
	return strings.Join(out, ",")
}

// waitEmpty waits for the queue to be empty (the Update that deletes the
// message is done before the final event, but allow for slow machines).
func (w *world) waitEmpty(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := w.m.QueueList(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(l) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still queued", len(l))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
