package mailroute

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// countingQueue counts the calls a queue round makes to its store.
type countingQueue struct {
	*MemoryQueue
	leases, leased, bodies, updates, releases, quarantines atomic.Int64
}

func (s *countingQueue) Lease(ctx context.Context, req LeaseRequest) ([]*QueuedMessage, error) {
	msgs, err := s.MemoryQueue.Lease(ctx, req)
	s.leases.Add(1)
	s.leased.Add(int64(len(msgs)))
	return msgs, err
}

func (s *countingQueue) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	s.bodies.Add(1)
	return s.MemoryQueue.Body(ctx, id)
}

func (s *countingQueue) Update(ctx context.Context, m *QueuedMessage) error {
	s.updates.Add(1)
	return s.MemoryQueue.Update(ctx, m)
}

func (s *countingQueue) Release(ctx context.Context, id, token string) error {
	s.releases.Add(1)
	return s.MemoryQueue.Release(ctx, id, token)
}

func (s *countingQueue) Quarantine(ctx context.Context, id, token string, reason error) error {
	s.quarantines.Add(1)
	return s.MemoryQueue.Quarantine(ctx, id, token, reason)
}

// enqueueDue puts n one-recipient messages to rcpt(i) straight into the
// store, due by now in the order of i: no poke, so the worker's own loop (an hour's poll)
// leaves them to the test's round.
func enqueueDue(t *testing.T, st QueueStore, now time.Time, n int, rcpt func(i int) string) {
	t.Helper()
	for i := range n {
		qm := &QueuedMessage{From: "a@sender.test", Created: now,
			Recipients: []QueuedRecipient{{Rcpt: rcpt(i), NextAttempt: now.Add(time.Duration(i - n)), Queued: now}}}
		if err := st.Enqueue(context.Background(), qm, bytes.NewReader([]byte("Subject: x\r\n\r\nbody\r\n"))); err != nil {
			t.Fatal(err)
		}
	}
}

// A round drains a destination's queue with exactly one Body and one
// Update per delivered message (the delete: no Release, no second write),
// on MaxConnsPerHost sessions, and leases in batches: at most 2 + n/C
// leases for n messages at Concurrency C (the window is 2C, leased again
// when half is free), where a lease per finished attempt made n+1.
func TestQueueDrainStoreCalls(t *testing.T) {
	const n, conc = 60, 10
	w := newDirectWorld(t)
	// The first recipient waits (up to 10 s) for the second session, so
	// that the count of sessions says whether the lane opened its second
	// one while the first was busy, not how fast the first one drained
	// the lane: without the wait, one session sometimes took all 60.
	var srv *smtptest.Server
	var first sync.Once
	srv = w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
		first.Do(func() {
			for end := time.Now().Add(10 * time.Second); srv.Connections() < 2 && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
		})
		return nil
	}})
	w.dns.MX("dest.test", "mx.dest.test")
	st := &countingQueue{MemoryQueue: newMemQueue()}
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{Queue: st, Concurrency: conc, MaxConnsPerHost: 2}, clock, events)
	enqueueDue(t, st.MemoryQueue, clock.Now(), n, func(i int) string { return fmt.Sprintf("r%d@dest.test", i) })
	st.leases.Store(0) // the worker's first round found the queue empty
	st.leased.Store(0)
	m.runQueue(t)

	if got := len(srv.Messages()); got != n {
		t.Fatalf("%d messages delivered, want %d", got, n)
	}
	if left := m.queueLen(t); left != 0 {
		t.Fatalf("%d messages still queued", left)
	}
	if b, u, r, q := st.bodies.Load(), st.updates.Load(), st.releases.Load(), st.quarantines.Load(); b != n || u != n || r != 0 || q != 0 {
		t.Errorf("store calls: %d Body, %d Update, %d Release, %d Quarantine; want %d, %d, 0, 0", b, u, r, q, n, n)
	}
	if l, got := st.leases.Load(), st.leased.Load(); l > 2+n/conc || got != n {
		t.Errorf("%d leases brought %d messages; want at most %d leases for %d", l, got, 2+n/conc, n)
	}
	if c := srv.Connections(); c != 2 {
		t.Errorf("%d sessions to the MX, want MaxConnsPerHost (2)", c)
	}
}

// Messages leased together go through their destinations' lanes: a
// destination whose only session is stuck holds up its own mail, not the
// mail of another destination leased with it. With Concurrency 4 and four
// messages for the stuck destination leased first, every message for the
// other one is delivered while the stuck one waits (a lease of
// Concurrency messages, all for the stuck destination, used to wait with
// it), and the stuck destination never gets a second session.
func TestQueueLanesStuckDestinationHoldsOnlyItsOwn(t *testing.T) {
	w := newDirectWorld(t)
	stuck := make(chan struct{})
	var once sync.Once
	unstick := func() { once.Do(func() { close(stuck) }) }
	defer unstick() // before the servers' cleanup, which waits for sessions
	slow := w.mx("mx.slow.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
		<-stuck
		return nil
	}})
	fast := w.mx("mx.fast.test", "127.0.0.2", smtptest.Options{})
	w.dns.MX("slow.test", "mx.slow.test")
	w.dns.MX("fast.test", "mx.fast.test")
	st := newMemQueue()
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{Queue: st, Concurrency: 4, MaxConnsPerHost: 1}, clock, events)
	enqueueDue(t, st, clock.Now(), 8, func(i int) string {
		if i < 4 {
			return fmt.Sprintf("s%d@slow.test", i) // due first
		}
		return fmt.Sprintf("f%d@fast.test", i)
	})
	done := make(chan struct{})
	go func() { defer close(done); m.runQueue(t) }()

	fast.WaitMessages(t, 4, 20*time.Second)
	if c := slow.Connections(); c > 1 {
		t.Errorf("%d sessions to the stuck MX, want at most MaxConnsPerHost (1)", c)
	}
	unstick()
	<-done
	if got := len(slow.Messages()); got != 4 {
		t.Errorf("the slow destination got %d messages, want 4", got)
	}
	if left := m.queueLen(t); left != 0 {
		t.Errorf("%d messages still queued", left)
	}
}

// A message that waited in its lane is checked against the holds when its
// delivery starts: once the destination pushed back (451 4.7.1) on the
// lane's first attempt, the messages leased with it and waiting behind it
// are not tried, and stay queued as they were.
func TestQueueLaneWaitingMessagesHeldAfterThrottle(t *testing.T) {
	w := newDirectWorld(t)
	var tried atomic.Int64
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
		tried.Add(1)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "rate limit exceeded, slow down"}
	}})
	w.dns.MX("dest.test", "mx.dest.test")
	st := newMemQueue()
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{Queue: st, Concurrency: 10, MaxConnsPerHost: 1}, clock, events)
	enqueueDue(t, st, clock.Now(), 5, func(i int) string { return fmt.Sprintf("r%d@dest.test", i) })
	m.runQueue(t)

	if got := tried.Load(); got != 1 {
		t.Fatalf("%d recipients tried, want 1: the others waited behind the throttled attempt", got)
	}
	if ev := events.last("r0@dest.test"); ev.Kind != EventDeferred {
		t.Errorf("r0: %+v, want deferred", ev)
	}
	list, err := m.QueueList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, qm := range list {
		r := qm.Recipients[0]
		if r.Rcpt != "r0@dest.test" && (r.Attempts != 0 || !r.NextAttempt.Before(clock.Now().Add(time.Second))) {
			t.Errorf("%s changed while held: %+v", r.Rcpt, r)
		}
	}
	// Nothing stays leased: the next round (after the hold) gets them all.
	clock.Advance(time.Hour)
	tried.Store(0)
	m.runQueue(t)
	if got := tried.Load(); got != 1 {
		t.Errorf("after the hold, %d recipients tried, want 1 again (throttled again)", got)
	}
}

// Shutdown whose deadline passes while a lane's first delivery is stuck
// ends every lease the round took — the stuck attempt's (its outcome
// unknown) and those of the messages waiting in the lane, prepared or not
// — so a next Mailer on the same store gets them all at once, not when the
// leases run out.
func TestShutdownEndsLeasesOfWaitingMessages(t *testing.T) {
	w := newDirectWorld(t)
	g := newGate()
	defer g.release()
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{DataPolicy: g.policy})
	w.dns.MX("dest.test", "mx.dest.test")
	st := newMemQueue()
	now := time.Now()
	enqueueDue(t, st, now, 5, func(i int) string { return fmt.Sprintf("r%d@dest.test", i) })
	m := w.mailer(Config{Queue: st, Concurrency: 2, MaxConnsPerHost: 1, queuePoll: time.Hour})
	g.wait(t) // the first delivery waits for its reply; the rest wait in the lane
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := m.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil with a delivery stuck past its deadline")
	}
	msgs, err := st.Lease(context.Background(), LeaseRequest{Now: time.Now(), Max: 10, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 5 {
		t.Fatalf("after Shutdown %d of 5 messages could be leased, want all: leases left behind", len(msgs))
	}
}

// Mail enqueued while the worker's round waits for a stuck delivery is
// leased when Enqueue wakes the worker, not when the round ends: it goes
// out while the stuck delivery still waits.
func TestQueueEnqueueDuringRoundGoesOut(t *testing.T) {
	w := newDirectWorld(t)
	g := newGate()
	defer g.release()
	w.mx("mx.slow.test", "127.0.0.1", smtptest.Options{DataPolicy: g.policy})
	fast := w.mx("mx.fast.test", "127.0.0.2", smtptest.Options{})
	w.dns.MX("slow.test", "mx.slow.test")
	w.dns.MX("fast.test", "mx.fast.test")
	m := w.mailer(Config{Queue: newMemQueue(), queuePoll: time.Hour})
	ctx := context.Background()
	if _, err := m.Enqueue(ctx, "a@sender.test", []string{"s@slow.test"}, bytes.NewReader([]byte(testBody))); err != nil {
		t.Fatal(err)
	}
	g.wait(t) // the worker's round waits for the slow MX's reply
	if _, err := m.Enqueue(ctx, "a@sender.test", []string{"f@fast.test"}, bytes.NewReader([]byte(testBody))); err != nil {
		t.Fatal(err)
	}
	fast.WaitMessages(t, 1, 20*time.Second)
	g.release()
}
