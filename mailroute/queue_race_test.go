package mailroute

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// gate blocks an MX's DataPolicy, after the final dot and before the
// reply, until the test opens it; it reports each message that reached it.
type gate struct {
	reached chan string // the first recipient of each message held
	open    chan struct{}
	once    sync.Once
}

// newGate returns a closed gate; the caller defers release, which runs
// before the servers' cleanup (they wait for their sessions).
func newGate() *gate {
	return &gate{reached: make(chan string, 16), open: make(chan struct{})}
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func (g *gate) policy(m *smtptest.Message) *smtp.SMTPError {
	g.reached <- m.Rcpts[0]
	<-g.open
	return nil
}

func (g *gate) wait(t *testing.T) string {
	t.Helper()
	select {
	case r := <-g.reached:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no message reached the end of DATA in 20 s")
		return ""
	}
}

// A Flush while a worker waits for the reply to the final dot leaves that
// message to the worker: the MX gets one copy (issue 13's repro, where
// the flush's lease took every message, leased or not, and sent it again).
func TestFlushDuringAttemptSendsOnce(t *testing.T) {
	w := newDirectWorld(t)
	g := newGate()
	defer g.release()
	var calls sync.Mutex
	first := true
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{DataPolicy: func(m *smtptest.Message) *smtp.SMTPError {
		calls.Lock()
		hold := first
		first = false
		calls.Unlock()
		if hold {
			return g.policy(m)
		}
		return nil
	}})
	w.dns.MX("dest.test", "mx.dest.test")
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{}, clock, events)
	if _, err := m.Enqueue(context.Background(), "a@sender.test", []string{"x@dest.test"}, strings.NewReader(testBody)); err != nil {
		t.Fatal(err)
	}
	g.wait(t) // the worker's attempt is past the final dot
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Flush(ctx, ""); err != nil || ctx.Err() != nil {
		t.Fatalf("Flush: %v, ctx %v", err, ctx.Err())
	}
	g.release()
	waitEvent(t, events, "x@dest.test", EventDelivered)
	if n := len(s.Attempts()); n != 1 {
		t.Fatalf("the MX saw %d transactions, want 1 (the flush must leave the worker's message alone)", n)
	}
	if got := strings.Join(events.kinds("x@dest.test"), ","); got != "delivered" {
		t.Errorf("events %s", got)
	}
}

func waitEvent(t *testing.T, events *eventLog, rcpt string, kind EventKind) Event {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if ev := events.last(rcpt); ev.Kind == kind {
			return ev
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %v event for %s in 20 s; events %v", kind, rcpt, events.kinds(rcpt))
	return Event{}
}

// deliveredLog signals each transaction the Mailer logs as delivering a
// recipient: by then the client has read the server's reply.
type deliveredLog struct{ ch chan struct{} }

func (h deliveredLog) Enabled(context.Context, slog.Level) bool { return true }
func (h deliveredLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h deliveredLog) WithGroup(string) slog.Handler            { return h }
func (h deliveredLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "delivered" && a.Value.Int64() > 0 {
			h.ch <- struct{}{}
			return false
		}
		return true
	})
	return nil
}

// Shutdown whose deadline ends an attempt: the recipient the server
// already accepted is recorded as delivered and leaves the queue; the one
// whose reply never came stays queued exactly as it was, and the next
// Mailer delivers only that one.
func TestShutdownRecordsKnownOutcomes(t *testing.T) {
	w := newDirectWorld(t)
	g := newGate()
	defer g.release()
	fast := w.mx("mx.fast.test", "127.0.0.1", smtptest.Options{})
	slow := w.mx("mx.slow.test", "127.0.0.2", smtptest.Options{DataPolicy: g.policy})
	w.dns.MX("fast.test", "mx.fast.test").MX("slow.test", "mx.slow.test")
	sp := newMemQueue()
	clock, events := newFakeClock(), &eventLog{}
	logged := deliveredLog{ch: make(chan struct{}, 4)}
	m := w.queued(Config{Queue: sp, Logger: slog.New(logged)}, clock, events)
	if _, err := m.Enqueue(context.Background(), "a@sender.test", []string{"x@fast.test", "y@slow.test"}, strings.NewReader(testBody)); err != nil {
		t.Fatal(err)
	}
	g.wait(t)
	select {
	case <-logged.ch:
	case <-time.After(20 * time.Second):
		t.Fatal("the fast MX's delivery was not logged")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no patience at all: the slow attempt is cut at once
	if err := m.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v, want context.Canceled", err)
	}
	if got := strings.Join(events.kinds("x@fast.test"), ","); got != "delivered" {
		t.Errorf("fast events %q, want delivered", got)
	}
	if got := events.kinds("y@slow.test"); len(got) != 0 {
		t.Errorf("slow events %v, want none: its outcome is unknown", got)
	}
	list, err := sp.List(context.Background())
	if err != nil || len(list) != 1 || len(list[0].Recipients) != 1 {
		t.Fatalf("after Shutdown: %+v, %v", list, err)
	}
	if r := list[0].Recipients[0]; r.Rcpt != "y@slow.test" || r.Attempts != 0 || !r.NextAttempt.Equal(clock.Now()) {
		t.Errorf("the unknown recipient changed: %+v", r)
	}

	g.release()
	later := &eventLog{}
	again := w.queued(Config{Queue: sp}, clock, later)
	fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer fcancel()
	if err := again.Flush(fctx, ""); err != nil {
		t.Fatal(err)
	}
	// The flush, or the new Mailer's first round if it leased first.
	waitEvent(t, later, "y@slow.test", EventDelivered)
	if n := len(fast.Messages()); n != 1 {
		t.Errorf("the fast MX got %d copies, want 1", n)
	}
	if n := len(slow.Messages()); n != 2 {
		t.Errorf("the slow MX got %d copies, want 2 (the unknown one and its retry)", n)
	}
	if again.queueLen(t) != 0 {
		t.Error("mail left in the queue")
	}
}

// A tarpitting MX that never answers the final dot: the attempt is cut
// off at 90% of its lease (a second here, on a fake clock that does not
// move), and the deferral is saved under the lease that is still held.
func TestAttemptEndsBeforeLease(t *testing.T) {
	w := newDirectWorld(t)
	g := newGate()
	defer g.release()
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{DataPolicy: g.policy})
	w.dns.MX("dest.test", "mx.dest.test")
	sp := newMemQueue()
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{Queue: sp, queueLease: time.Second}, clock, events)
	qm := &QueuedMessage{From: "a@sender.test", Created: clock.Now(), Recipients: []QueuedRecipient{
		{Rcpt: "x@dest.test", Queued: clock.Now(), NextAttempt: clock.Now()}}}
	if err := sp.Enqueue(context.Background(), qm, strings.NewReader(testBody)); err != nil {
		t.Fatal(err)
	}
	m.runQueue(t) // with a 20-second context: cut off by the lease, not by it
	// (or the worker's first round did it, if it leased first)
	ev := waitEvent(t, events, "x@dest.test", EventDeferred)
	if ev.Kind != EventDeferred || ev.Err == nil || !strings.Contains(ev.Err.Error(), "attempt stopped after 900ms, before its lease ran out") {
		t.Fatalf("event %+v, want deferred by the lease's cut-off", ev)
	}
	list, _ := sp.List(context.Background())
	if len(list) != 1 || list[0].Recipients[0].Attempts != 1 || !list[0].Recipients[0].NextAttempt.Equal(ev.NextAttempt) {
		t.Fatalf("stored %+v, want the deferral saved with the event's next attempt %v", list, ev.NextAttempt)
	}
	if n := len(s.Attempts()); n != 0 {
		t.Errorf("the MX recorded %d finished transactions", n)
	}
}
