package mailroute

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// queuedTLS is tlsWorld's Mailer with a queue on a fake clock, as
// directWorld.queued makes it: the tests run the rounds.
func (w *tlsWorld) queuedTLS(cfg Config, clock *fakeClock, events *eventLog) *Mailer {
	w.t.Helper()
	cfg.now = clock.Now
	cfg.queuePoll = time.Hour
	cfg.OnEvent = events.add
	cfg.Retry.Jitter = -1
	if cfg.Retry.FirstRetry == 0 {
		cfg.Retry.FirstRetry = 5 * time.Minute
	}
	m := w.mailer(cfg, false)
	<-m.queue.firstRound
	return m
}

// mailCounter is a MailPolicy that counts MAIL commands: a message that
// must not be sent is not even announced.
func mailCounter(n *atomic.Int64) func(string) *smtp.SMTPError {
	return func(string) *smtp.SMTPError { n.Add(1); return nil }
}

// TestREQUIRETLSQueued: a REQUIRETLS message deferred by an MX (MTA-STS
// enforced, so authenticated) that does not offer REQUIRETLS is queued
// with the mark; its retry to that MX stays deferred without a MAIL
// command; after a restart on the same store, with the domain's MX now
// offering REQUIRETLS, the retry delivers it with the REQUIRETLS MAIL
// parameter. A message without the mark, greylisted at the first MX, is
// queued without it and delivered there on the same retry.
func TestREQUIRETLSQueued(t *testing.T) {
	w := newTLSWorld(t)
	var mails1, mails2 atomic.Int64
	mx1 := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{TLS: w.ca.ServerConfig("mx.dest.test"),
		MailPolicy: mailCounter(&mails1), RcptPolicy: smtptest.Greylist(1)})
	mx2 := w.mx("mx2.dest.test", "127.0.0.2", smtptest.Options{TLS: w.ca.ServerConfig("mx2.dest.test"),
		EnableREQUIRETLS: true, MailPolicy: mailCounter(&mails2)})
	w.dns.MX("dest.test", "mx.dest.test")
	w.sts("dest.test", "1", "enforce", "mx.dest.test", "mx2.dest.test")
	store := newMemQueue()
	clock, events := newFakeClock(), &eventLog{}
	m := w.queuedTLS(Config{Queue: store}, clock, events)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := m.Send(WithREQUIRETLS(ctx), "a@sender.test", []string{"secret@dest.test"}, strings.NewReader(testBody))
	if err != nil {
		t.Fatalf("Send: %v (a queued recipient is not an error)", err)
	}
	if r := wantStatus(t, res, "secret@dest.test", Queued); !errors.Is(r.Err, ErrREQUIRETLS) {
		t.Errorf("err %v, want ErrREQUIRETLS", r.Err)
	}
	res, _ = m.Send(ctx, "a@sender.test", []string{"plain@dest.test"}, strings.NewReader(testBody))
	wantStatus(t, res, "plain@dest.test", Queued)
	list, err := m.QueueList(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("queued %d messages (%v), want 2", len(list), err)
	}
	for _, qm := range list {
		if want := qm.Recipients[0].Rcpt == "secret@dest.test"; qm.RequireTLS != want {
			t.Errorf("%s queued with RequireTLS %v, want %v", qm.Recipients[0].Rcpt, qm.RequireTLS, want)
		}
	}
	sent := mails1.Load() // the greylisted message's MAIL

	// The retry, to the same MX: the marked message stays deferred and is
	// not announced; the other is delivered, without the parameter.
	clock.Advance(5 * time.Minute)
	m.runQueue(t)
	if ev := events.last("secret@dest.test"); ev.Kind != EventDeferred || ev.Attempt != 2 || !errors.Is(ev.Err, ErrREQUIRETLS) {
		t.Fatalf("the retry to an MX without REQUIRETLS: %+v", ev)
	}
	if ev := events.last("plain@dest.test"); ev.Kind != EventDelivered {
		t.Fatalf("the unmarked message's retry: %+v", ev)
	}
	if n := mails1.Load() - sent; n != 1 {
		t.Errorf("the MX got %d MAIL commands on the retry, want 1 (the unmarked message's)", n)
	}
	got := mx1.Messages()
	if len(got) != 1 || got[0].Rcpts[0] != "plain@dest.test" || got[0].MailOpts.RequireTLS {
		t.Fatalf("the MX without REQUIRETLS received %d messages: %v", len(got), got)
	}
	list, _ = m.QueueList(ctx)
	if len(list) != 1 || !list[0].RequireTLS || list[0].Recipients[0].Attempts != 2 ||
		!strings.Contains(list[0].Recipients[0].LastError, "REQUIRETLS") {
		t.Fatalf("after the retry the queue holds %+v", list)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart on the same store; the domain's MX now offers REQUIRETLS.
	w.dns.Remove("dest.test").MX("dest.test", "mx2.dest.test")
	m2 := w.queuedTLS(Config{Queue: store}, clock, events)
	clock.Advance(time.Hour)
	m2.runQueue(t)
	if ev := events.last("secret@dest.test"); ev.Kind != EventDelivered || ev.Attempt != 3 || ev.TLS != TLSMTASTS {
		t.Fatalf("the retry to an MX offering REQUIRETLS: %+v", ev)
	}
	got = mx2.Messages()
	if len(got) != 1 || got[0].Rcpts[0] != "secret@dest.test" {
		t.Fatalf("the MX offering REQUIRETLS received %d messages", len(got))
	}
	if !got[0].MailOpts.RequireTLS {
		t.Error("delivered without the REQUIRETLS MAIL parameter")
	}
	if mails2.Load() != 1 || len(mx1.Messages()) != 1 {
		t.Errorf("MAIL commands at the second MX %d, messages at the first %d", mails2.Load(), len(mx1.Messages()))
	}
	if n := m2.queueLen(t); n != 0 {
		t.Errorf("%d still queued", n)
	}
}

// TestREQUIRETLSQueuedGivesUp: a queued REQUIRETLS recipient that never
// finds a hop offering it is given up at RetryPolicy.MaxAge with
// ErrREQUIRETLS, never sent otherwise; the delivery status notification
// says why, goes without REQUIRETLS (the sender's MX has no policy) and so
// leaves out the original header (RFC 8689 §4.4).
func TestREQUIRETLSQueuedGivesUp(t *testing.T) {
	w := newTLSWorld(t)
	var mails atomic.Int64
	mx := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{TLS: w.ca.ServerConfig("mx.dest.test"), MailPolicy: mailCounter(&mails)})
	home := w.mx("mx.sender.test", "127.0.0.2", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	w.dns.MX("sender.test", "mx.sender.test")
	w.sts("dest.test", "1", "enforce", "mx.dest.test")
	clock, events := newFakeClock(), &eventLog{}
	m := w.queuedTLS(Config{Queue: newMemQueue(), DSN: true, Retry: RetryPolicy{FirstRetry: 30 * time.Minute, MaxAge: time.Hour}}, clock, events)

	body := "From: a@sender.test\r\nTo: x@dest.test\r\nSubject: confidential\r\nMessage-ID: <orig@sender.test>\r\n\r\nbody\r\n"
	ctx, cancel := context.WithTimeout(WithREQUIRETLS(context.Background()), 20*time.Second)
	defer cancel()
	res, _ := m.Send(ctx, "a@sender.test", []string{"x@dest.test"}, strings.NewReader(body))
	wantStatus(t, res, "x@dest.test", Queued)
	for _, step := range []time.Duration{30 * time.Minute, time.Hour} {
		clock.Advance(step)
		m.runQueue(t)
	}
	ev := events.last("x@dest.test")
	if ev.Kind != EventGaveUp || ev.Attempt != 3 || !errors.Is(ev.Err, ErrREQUIRETLS) {
		t.Fatalf("final event %+v, want gave-up with ErrREQUIRETLS", ev)
	}
	if got := strings.Join(events.kinds("x@dest.test"), ","); got != "queued,deferred,gave-up" {
		t.Errorf("events %s", got)
	}
	if mails.Load() != 0 || len(mx.Attempts()) != 0 {
		t.Errorf("the MX without REQUIRETLS got %d MAIL commands", mails.Load())
	}
	msgs := home.WaitMessages(t, 1, 5*time.Second)
	dsn := string(msgs[0].Data)
	if msgs[0].From != "" || msgs[0].MailOpts.RequireTLS {
		t.Errorf("DSN from %q, REQUIRETLS %v", msgs[0].From, msgs[0].MailOpts.RequireTLS)
	}
	for _, want := range []string{"Final-Recipient: rfc822; x@dest.test", "Status: 4.4.7", "REQUIRETLS"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	for _, leak := range []string{"Message-ID: <orig@sender.test>", "confidential", "text/rfc822-headers"} {
		if strings.Contains(dsn, leak) {
			t.Errorf("DSN of a REQUIRETLS message returns %q:\n%s", leak, dsn)
		}
	}
}
