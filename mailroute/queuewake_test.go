package mailroute

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// notifyingQueue is a MemoryQueue whose Notify hands the wake function to
// the test, as a database's notifications would call it.
type notifyingQueue struct {
	*MemoryQueue
	wake    chan func()
	leases  atomic.Int64
	stopped chan struct{}
}

func (s *notifyingQueue) Lease(ctx context.Context, req LeaseRequest) ([]*QueuedMessage, error) {
	s.leases.Add(1)
	return s.MemoryQueue.Lease(ctx, req)
}

func (s *notifyingQueue) Notify(ctx context.Context, wake func()) {
	s.wake <- wake
	<-ctx.Done()
	close(s.stopped)
}

// A store's notification starts a round at once, whatever the poll; the
// Mailer runs Notify once and ends it when it shuts down. The poll here is
// an hour, so only the wake can explain a second lease.
func TestQueueNotifierWakes(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	st := &notifyingQueue{MemoryQueue: newMemQueue(), wake: make(chan func(), 2), stopped: make(chan struct{})}
	m := w.mailer(Config{Queue: st, queuePoll: time.Hour})
	var wake func()
	select {
	case wake = <-st.wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the Mailer never called Notify")
	}
	// The first round ran at start and found nothing.
	for st.leases.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	// Another instance enqueues (the store directly, so the Mailer's own
	// poke plays no part) and the notification arrives.
	now := time.Now()
	if err := st.MemoryQueue.Enqueue(context.Background(), &QueuedMessage{From: "a@sender.test", Created: now,
		Recipients: []QueuedRecipient{{Rcpt: "x@dest.test", Queued: now, NextAttempt: now}}}, strings.NewReader(testBody)); err != nil {
		t.Fatal(err)
	}
	wake()
	if msgs := s.WaitMessages(t, 1, 10*time.Second); msgs[0].Rcpts[0] != "x@dest.test" {
		t.Fatalf("delivered %v", msgs[0].Rcpts)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.stopped:
	default:
		t.Fatal("Close returned with Notify still running")
	}
	if len(st.wake) != 0 {
		t.Error("Notify was called more than once")
	}
}
