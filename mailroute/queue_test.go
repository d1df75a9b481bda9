package mailroute

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// fakeClock drives the queue's schedule: no test sleeps for a retry.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// eventLog records Config.OnEvent calls.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) kinds(rcpt string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if e.Rcpt == rcpt {
			out = append(out, e.Kind.String())
		}
	}
	return out
}

func (l *eventLog) last(rcpt string) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.events) - 1; i >= 0; i-- {
		if l.events[i].Rcpt == rcpt {
			return l.events[i]
		}
	}
	return Event{}
}

// queueWorld is a direct world with a queue on a fake clock. The workers'
// own loop is slowed to a crawl: tests run rounds themselves.
func (w *directWorld) queued(cfg Config, clock *fakeClock, events *eventLog) *Mailer {
	w.t.Helper()
	if cfg.Queue == nil {
		cfg.Queue = newMemQueue()
	}
	cfg.now = clock.Now
	cfg.queuePoll = time.Hour
	cfg.OnEvent = events.add
	if cfg.Retry.Jitter == 0 {
		cfg.Retry.Jitter = -1 // exact times
	}
	if cfg.Retry.FirstRetry == 0 {
		// Round numbers for the schedule tests; the default is
		// TestRetrySchedule's.
		cfg.Retry.FirstRetry = 5 * time.Minute
	}
	return w.mailer(cfg)
}

func (m *Mailer) runQueue(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m.queue.round(ctx, "", false)
}

func (m *Mailer) queueLen(t *testing.T) int {
	t.Helper()
	list, err := m.QueueList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, qm := range list {
		n += len(qm.Recipients)
	}
	return n
}

// deferFirst greylists the first n attempts of each recipient and counts
// every attempt.
func deferFirst(n int) (func(string) *smtp.SMTPError, *atomic.Int64) {
	var attempts atomic.Int64
	policy := smtptest.Greylist(n)
	return func(rcpt string) *smtp.SMTPError {
		attempts.Add(1)
		return policy(rcpt)
	}, &attempts
}

func TestQueueRetriesDeferred(t *testing.T) {
	w := newDirectWorld(t)
	policy, attempts := deferFirst(1)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: policy})
	w.dns.MX("dest.test", "mx.dest.test")
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{}, clock, events)

	res, err := send(t, m, "a@sender.test", []string{"grey@dest.test"}, testBody)
	if err != nil {
		t.Fatalf("Send: %v (a queued recipient is not an error)", err)
	}
	r := wantStatus(t, res, "grey@dest.test", Queued)
	if r.Err == nil || Classify(r.Err) != ClassGreylist {
		t.Errorf("queued recipient keeps the reason: %v", r.Err)
	}
	list, _ := m.QueueList(context.Background())
	if len(list) != 1 || list[0].Recipients[0].NextAttempt != clock.Now().Add(5*time.Minute) || list[0].Recipients[0].Attempts != 1 {
		t.Fatalf("queued: %+v", list)
	}

	m.runQueue(t) // not due yet
	if attempts.Load() != 1 {
		t.Fatalf("attempted before its time: %d attempts", attempts.Load())
	}
	clock.Advance(5 * time.Minute)
	m.runQueue(t)
	if attempts.Load() != 2 || len(s.Messages()) != 1 || m.queueLen(t) != 0 {
		t.Fatalf("after 5 minutes: %d attempts, %d messages, %d queued", attempts.Load(), len(s.Messages()), m.queueLen(t))
	}
	if got := strings.Join(events.kinds("grey@dest.test"), ","); got != "queued,delivered" {
		t.Errorf("events %s", got)
	}
	if ev := events.last("grey@dest.test"); ev.Attempt != 2 || ev.QueueID != list[0].ID || ev.Host != "mx.dest.test" {
		t.Errorf("last event %+v", ev)
	}
	if !bytes.Equal(s.Messages()[0].Data, []byte(testBody)) {
		t.Errorf("retried body %q", s.Messages()[0].Data)
	}
}

func TestRetrySchedule(t *testing.T) {
	p := RetryPolicy{Jitter: -1}.withDefaults()
	want := []time.Duration{330 * time.Second, 11 * time.Minute, 22 * time.Minute, 44 * time.Minute, 88 * time.Minute, 2 * time.Hour, 2 * time.Hour}
	for i, d := range want {
		if got := p.delay(i + 1); got != d {
			t.Errorf("attempt %d: %v, want %v", i+1, got, d)
		}
	}
	j := RetryPolicy{}.withDefaults()
	for range 100 {
		if d := j.delay(2); d < 528*time.Second || d > 792*time.Second {
			t.Fatalf("jittered second delay %v outside 11m ± 20%%", d)
		}
		// Never before postgrey's 300 s (and the 5 minutes of most
		// greylisters), and not much after.
		if d := j.delay(1); d < 330*time.Second || d > 396*time.Second {
			t.Fatalf("jittered first delay %v outside [5m30s, 6m36s]", d)
		}
	}
	if p.MaxAge != 5*24*time.Hour || p.FallbackAfter != 2 {
		t.Errorf("defaults %+v", p)
	}
}

func TestQueueFallbackOverTime(t *testing.T) {
	w := newDirectWorld(t)
	policy, _ := deferFirst(1000) // greylisting that never clears
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: policy})
	w.dns.MX("dest.test", "mx.dest.test")
	relay := newRelay(t, smtptest.Options{})
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{Relay: relay.relay()}, clock, events)

	res, _ := send(t, m, "a@sender.test", []string{"grey@dest.test"}, testBody)
	wantStatus(t, res, "grey@dest.test", Queued) // greylisting: no fallback at once
	clock.Advance(5 * time.Minute)
	m.runQueue(t) // second direct attempt, deferred
	if len(relay.s.Messages()) != 0 {
		t.Fatal("fell back before FallbackAfter direct attempts")
	}
	clock.Advance(10 * time.Minute)
	m.runQueue(t) // third attempt: through the relay
	if len(relay.s.Messages()) != 1 || m.queueLen(t) != 0 {
		t.Fatalf("relay got %d, %d queued", len(relay.s.Messages()), m.queueLen(t))
	}
	ev := events.last("grey@dest.test")
	if ev.Kind != EventDelivered || !ev.Fallback || ev.Via != Relayed || !strings.Contains(ev.Route.Reason, "FallbackAfter") {
		t.Errorf("event %+v", ev)
	}
	if got := strings.Join(events.kinds("grey@dest.test"), ","); got != "queued,deferred,delivered" {
		t.Errorf("events %s", got)
	}
}

func TestQueueGivesUpWithDSN(t *testing.T) {
	w := newDirectWorld(t)
	policy, _ := deferFirst(1000)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(rcpt string) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, "gone") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return policy(rcpt)
	}})
	home := w.mx("mx.sender.test", "127.0.0.2", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	w.dns.MX("sender.test", "mx.sender.test")
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{DSN: true, Retry: RetryPolicy{FirstRetry: 30 * time.Minute, MaxAge: time.Hour}}, clock, events)

	body := "From: a@sender.test\r\nTo: x@dest.test\r\nSubject: important\r\nMessage-ID: <orig@sender.test>\r\n\r\nbody\r\n"
	res, err := send(t, m, "a@sender.test", []string{"x@dest.test"}, body)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, res, "x@dest.test", Queued)
	clock.Advance(30 * time.Minute)
	m.runQueue(t)
	if k := events.last("x@dest.test").Kind; k != EventDeferred {
		t.Fatalf("after 30 min: %v", k)
	}
	clock.Advance(time.Hour)
	m.runQueue(t)
	if ev := events.last("x@dest.test"); ev.Kind != EventGaveUp || ev.Attempt != 3 {
		t.Fatalf("after 90 min: %+v", ev)
	}
	if m.queueLen(t) != 0 {
		t.Fatal("given-up recipient still queued")
	}
	msgs := home.WaitMessages(t, 1, 5*time.Second)
	dsn := string(msgs[0].Data)
	if msgs[0].From != "" || msgs[0].Rcpts[0] != "a@sender.test" {
		t.Errorf("DSN envelope %q → %v, want <> → the sender", msgs[0].From, msgs[0].Rcpts)
	}
	for _, want := range []string{"multipart/report; report-type=delivery-status", "Final-Recipient: rfc822; x@dest.test",
		"Action: failed", "Status: 4.4.7", "Remote-MTA: dns; mx.dest.test", "Message-ID: <orig@sender.test>", "Auto-Submitted: auto-replied"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
}

func TestQueuePermanentFailureAfterQueueing(t *testing.T) {
	w := newDirectWorld(t)
	var fail atomic.Bool
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
		if fail.Load() {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "local problem"}
	}})
	home := w.mx("mx.sender.test", "127.0.0.2", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	w.dns.MX("sender.test", "mx.sender.test")
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{DSN: true}, clock, events)
	send(t, m, "a@sender.test", []string{"u@dest.test"}, testBody)
	fail.Store(true)
	clock.Advance(5 * time.Minute)
	m.runQueue(t)
	if ev := events.last("u@dest.test"); ev.Kind != EventFailed || !IsPermanent(ev.Err) {
		t.Fatalf("%+v", ev)
	}
	dsn := string(home.WaitMessages(t, 1, 5*time.Second)[0].Data)
	if !strings.Contains(dsn, "Status: 5.1.1") || !strings.Contains(dsn, "Diagnostic-Code: smtp; 550 5.1.1") {
		t.Errorf("DSN:\n%s", dsn)
	}

	// A message from the null sender never gets a notification.
	fail.Store(false)
	send(t, m, "", []string{"v@dest.test"}, testBody)
	fail.Store(true)
	clock.Advance(5 * time.Minute)
	m.runQueue(t)
	time.Sleep(100 * time.Millisecond)
	if n := len(home.Messages()); n != 1 {
		t.Errorf("%d notifications, want 1 (none for the null sender)", n)
	}
}

// A destination that pushes back (421, a 4.7.x rate limit) holds its other
// queued mail too, instead of being hammered.
func TestQueueDestinationBackoff(t *testing.T) {
	w := newDirectWorld(t)
	var throttle atomic.Bool
	var attempts atomic.Int64
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
		attempts.Add(1)
		if throttle.Load() {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "rate limit exceeded, slow down"}
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "local problem"}
	}})
	w.dns.MX("dest.test", "mx.dest.test")
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{}, clock, events)
	send(t, m, "a@sender.test", []string{"a@dest.test"}, testBody) // due +5m
	clock.Advance(time.Minute)
	send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody) // due +6m
	throttle.Store(true)
	clock.Advance(4 * time.Minute) // a is due
	m.runQueue(t)
	if ev := events.last("a@dest.test"); ev.Kind != EventDeferred || ev.NextAttempt != clock.Now().Add(10*time.Minute) {
		t.Fatalf("a: %+v", ev)
	}
	before := attempts.Load()
	clock.Advance(2 * time.Minute) // b is due, but dest.test is held
	m.runQueue(t)
	if attempts.Load() != before {
		t.Fatalf("a held destination was tried again")
	}
	clock.Advance(9 * time.Minute) // past the hold
	m.runQueue(t)
	if attempts.Load() != before+2 {
		t.Fatalf("%d attempts after the hold, want 2", attempts.Load()-before)
	}
}

func TestQueueFlush(t *testing.T) {
	w := newDirectWorld(t)
	policy, _ := deferFirst(1)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: policy})
	w.dns.MX("dest.test", "mx.dest.test")
	w.dns.MX("other.test", "mx.dest.test")
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{}, clock, events)
	send(t, m, "a@sender.test", []string{"x@dest.test", "y@other.test"}, testBody)
	if err := m.Flush(context.Background(), "Dest.Test"); err != nil {
		t.Fatal(err)
	}
	if len(s.Messages()) != 1 || m.queueLen(t) != 1 {
		t.Fatalf("flush of one domain: %d delivered, %d queued", len(s.Messages()), m.queueLen(t))
	}
	m.Flush(context.Background(), "")
	if len(s.Messages()) != 2 || m.queueLen(t) != 0 {
		t.Fatalf("flush of all: %d delivered, %d queued", len(s.Messages()), m.queueLen(t))
	}
}

func TestEnqueueDeliversInBackground(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{Queue: newMemQueue(), queuePoll: 20 * time.Millisecond})
	id, err := m.Enqueue(context.Background(), "a@sender.test", []string{"x@dest.test", "y@dest.test"}, strings.NewReader(testBody))
	if err != nil || id == "" {
		t.Fatalf("Enqueue: %q, %v", id, err)
	}
	msgs := s.WaitMessages(t, 1, 10*time.Second)
	if len(msgs[0].Rcpts) != 2 {
		t.Errorf("rcpts %v", msgs[0].Rcpts)
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.queueLen(t) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if m.queueLen(t) != 0 {
		t.Fatal("delivered mail still queued")
	}
	plain, err := New(Config{Hostname: "h.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Enqueue(context.Background(), "a@b.test", []string{"c@d.test"}, strings.NewReader(testBody)); err != ErrNoQueue {
		t.Errorf("Enqueue without a queue: %v", err)
	}
}

// Shutdown with a deadline during an attempt leaves the recipient queued
// for the next Mailer on the same store: nothing is lost. (That the
// directory store keeps it across a restart is mailroute/spool's test.)
func TestShutdownMidAttemptKeepsMail(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{StallDuringData: true})
	w.dns.MX("dest.test", "mx.dest.test")
	sp := newMemQueue()
	m := w.mailer(Config{Queue: sp, queuePoll: 20 * time.Millisecond})
	if _, err := m.Enqueue(context.Background(), "a@sender.test", []string{"x@dest.test"}, strings.NewReader(testBody+strings.Repeat(strings.Repeat("z", 900)+"\r\n", 20000))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Connections() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // well into DATA
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := m.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned before the stalled attempt ended")
	}
	list, err := sp.List(context.Background())
	if err != nil || len(list) != 1 || len(list[0].Recipients) != 1 {
		t.Fatalf("after shutdown: %+v, %v", list, err)
	}
	if r := list[0].Recipients[0]; r.Attempts != 0 || r.LastError != "" {
		t.Errorf("the recipient whose outcome is unknown changed: %+v", r)
	}
}

// A flush tries each queued message once, even when the attempt defers it
// again, and returns.
func TestQueueFlushTriesOnce(t *testing.T) {
	w := newDirectWorld(t)
	policy, attempts := deferFirst(1000)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: policy})
	w.dns.MX("dest.test", "mx.dest.test")
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{}, clock, events)
	send(t, m, "a@sender.test", []string{"x@dest.test"}, testBody)
	send(t, m, "a@sender.test", []string{"y@dest.test"}, testBody)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Flush(ctx, ""); err != nil || ctx.Err() != nil {
		t.Fatalf("Flush: %v, ctx %v", err, ctx.Err())
	}
	if n := attempts.Load(); n != 4 {
		t.Fatalf("%d attempts, want 4 (2 by Send, 1 each by the flush)", n)
	}
	if m.queueLen(t) != 2 {
		t.Fatal("deferred mail left the queue")
	}
}
