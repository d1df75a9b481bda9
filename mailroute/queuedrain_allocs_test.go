package mailroute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// The allocation budget of the queue's runtime per drained message: a
// queued 2 KiB message to one recipient delivered through the relay on a
// kept session, its outcome recorded. One: the attempt (the message's
// state, its Result and the first job's Destination, which a Router may
// keep, so it is never reused). The rest is per lease: the batch's due
// lists, one array for the Concurrency/2 or so messages a lease brings
// once the round runs (8 here: an eighth of an allocation each), and now
// and then a lane's goroutines starting again when the scheduler let its
// lane run dry (1.10 to 1.21 measured; one more allocation per message
// fails). Per message, the body
// comes from the memory the previous one released, the first job and the
// envelope from Send's scratch, the cut-off context from the runner's
// (see cutoffs), and the engine registers on it without an allocation
// (cutCtx is a smtpclient.Watcher).
const drainAllocBudget = 1.5

// A drain allocates drainAllocBudget times per message, whatever the
// store costs: the store here and the sink (smtptest.StartSink) allocate
// nothing per message, so what is counted is the runtime's and the
// engine's. The count is per message between two drains of different
// sizes, so that New, Close and the first session cancel out.
func TestQueueDrainAllocations(t *testing.T) {
	sink := smtptest.StartSink(t, true)
	drain := func(n int) uint64 {
		st := newZeroAllocQueue(n)
		var delivered atomic.Int64
		done := make(chan struct{})
		cfg := Config{
			Hostname:        "mail.sender.test",
			Router:          allSmarthost,
			Relay:           &Relay{Addr: sink, InsecurePlaintextLoopback: true, MaxIdle: 1},
			MaxConnsPerHost: 1,
			Concurrency:     8,
			Queue:           st,
			OnEvent: func(ev Event) {
				if ev.Kind != EventDelivered {
					t.Errorf("event %v for %s: %v", ev.Kind, ev.Rcpt, ev.Err)
				}
				if delivered.Add(1) == int64(n) {
					close(done)
				}
			},
			queuePoll: time.Hour, // one round: the first
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%d of %d messages delivered", delivered.Load(), n)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		if got := st.deleted.Load(); got != int64(n) {
			t.Fatalf("%d messages recorded as delivered, want %d", got, n)
		}
		return after.Mallocs - before.Mallocs
	}
	drain(50) // the sink's session and the pools, once
	const small, large = 200, 1200
	a, b := drain(small), drain(large)
	per := float64(b-a) / (large - small)
	t.Logf("%.2f allocations per drained message (%d for %d, %d for %d)", per, a, small, b, large)
	if raceEnabled {
		return // counts are not exact under the race detector; the drains ran
	}
	if per > drainAllocBudget {
		t.Errorf("%.2f allocations per drained message, want at most %v", per, drainAllocBudget)
	}
}

// zeroAllocQueue is a QueueStore of n queued one-recipient messages, made
// up front, that allocates nothing per message: Lease hands out the next
// ones, Body a reader made with them, Update counts the deliveries.
type zeroAllocQueue struct {
	mu      sync.Mutex
	msgs    []*QueuedMessage
	bodies  []zeroAllocBody
	next    int
	deleted atomic.Int64
}

type zeroAllocBody struct{ bytes.Reader }

func (*zeroAllocBody) Close() error { return nil }

func newZeroAllocQueue(n int) *zeroAllocQueue {
	now := time.Now()
	s := &zeroAllocQueue{msgs: make([]*QueuedMessage, n), bodies: make([]zeroAllocBody, n)}
	for i := range n {
		s.msgs[i] = &QueuedMessage{ID: strconv.Itoa(i), From: benchFrom, Created: now, Lease: "1",
			Recipients: []QueuedRecipient{{Rcpt: benchRcpt, Queued: now, NextAttempt: now}}}
		s.bodies[i].Reset(bench2KiB)
	}
	return s
}

func (s *zeroAllocQueue) Lease(_ context.Context, req LeaseRequest) ([]*QueuedMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := min(req.Max, len(s.msgs)-s.next)
	out := s.msgs[s.next : s.next+k : s.next+k]
	for _, qm := range out {
		qm.LeaseUntil = req.Now.Add(req.Duration)
	}
	s.next += k
	return out, nil
}

func (s *zeroAllocQueue) Body(_ context.Context, id string) (io.ReadCloser, error) {
	i, err := strconv.Atoi(id)
	if err != nil {
		return nil, err
	}
	return &s.bodies[i], nil
}

func (s *zeroAllocQueue) Update(_ context.Context, m *QueuedMessage) error {
	if len(m.Recipients) != 0 {
		return fmt.Errorf("message %s: %d recipients left", m.ID, len(m.Recipients))
	}
	s.deleted.Add(1)
	return nil
}

func (s *zeroAllocQueue) Release(context.Context, string, string) error { return nil }

func (s *zeroAllocQueue) Quarantine(_ context.Context, id, _ string, reason error) error {
	return fmt.Errorf("message %s quarantined: %w", id, reason)
}

func (s *zeroAllocQueue) Enqueue(context.Context, *QueuedMessage, io.Reader) error {
	return errors.New("zeroAllocQueue: no Enqueue")
}

func (s *zeroAllocQueue) List(context.Context) ([]*QueuedMessage, error) { return nil, nil }
