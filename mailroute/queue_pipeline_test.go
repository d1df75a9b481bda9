package mailroute

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// gatedStore holds every Update until the test opens the gate, the way a
// slow fsync holds it.
type gatedStore struct {
	*MemoryQueue
	gate    chan struct{}
	waiting chan struct{} // one value per Update that reached the gate
}

func (s *gatedStore) Update(ctx context.Context, m *QueuedMessage) error {
	s.waiting <- struct{}{}
	<-s.gate
	return s.MemoryQueue.Update(ctx, m)
}

// TestQueueDeliversWhileStoring: a queue round frees a delivery slot as
// soon as the delivery is over, before the store has recorded it, and
// stops delivering once queueRecordingFactor×Concurrency outcomes wait for
// the store (plus the Concurrency deliveries that then keep their slots).
// Nothing is lost meanwhile: once the store goes on, every message is
// delivered exactly once and the queue is empty.
func TestQueueDeliversWhileStoring(t *testing.T) {
	const conc, n = 2, 15
	recording := queueRecordingFactor * conc
	w := newDirectWorld(t)
	srv := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	st := &gatedStore{MemoryQueue: newMemQueue(), gate: make(chan struct{}), waiting: make(chan struct{}, n)}
	ctx := context.Background()
	now := time.Now()
	for i := range n {
		qm := &QueuedMessage{From: "a@sender.test", Created: now,
			Recipients: []QueuedRecipient{{Rcpt: fmt.Sprintf("r%d@dest.test", i), NextAttempt: now, Queued: now}}}
		if err := st.MemoryQueue.Enqueue(ctx, qm, bytes.NewReader([]byte("Subject: x\r\n\r\nbody\r\n"))); err != nil {
			t.Fatal(err)
		}
	}
	m := w.mailer(Config{Queue: st, Concurrency: conc, queuePoll: time.Hour})

	for range recording {
		<-st.waiting // that many outcomes wait for the store
	}
	// The deliveries that found every recording place taken are over too;
	// wait until the server has them, then check that no more start.
	want := recording + conc
	deadline := time.Now().Add(10 * time.Second)
	for len(srv.Messages()) < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a delivery beyond the bound would show now
	if got := len(srv.Messages()); got != want {
		t.Fatalf("with %d outcomes waiting for the store, %d messages delivered, want %d", recording, got, want)
	}

	close(st.gate)
	deadline = time.Now().Add(10 * time.Second)
	for m.queueLen(t) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if left := m.queueLen(t); left != 0 {
		t.Fatalf("%d messages still queued", left)
	}
	if got := len(srv.Messages()); got != n {
		t.Errorf("%d messages delivered, want %d, each once", got, n)
	}
}
