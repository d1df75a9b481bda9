package riverqueue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/queuetest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// The same suite as the embedded directory store's (mailroute/spool).
func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) mailroute.QueueStore {
		s, _ := newStore(t)
		return s
	})
}

// Two Store values on one database, as two instances hold them.
func TestSharedConformance(t *testing.T) {
	queuetest.RunShared(t, func(t *testing.T) (mailroute.QueueStore, mailroute.QueueStore) {
		a, pool := newStore(t)
		return a, &riverqueue.Store{Pool: pool}
	})
}

// What a restarted instance finds: a new Store value on the database.
func TestReopenConformance(t *testing.T) {
	s, pool := newStore(t)
	queuetest.RunReopen(t, s, func() mailroute.QueueStore { return &riverqueue.Store{Pool: pool} })
}

func TestSkipsWithoutPeers(t *testing.T) {
	t.Setenv("MAILROUTE_PEERS", "")
	ran := false
	t.Run("inner", func(t *testing.T) {
		newDB(t)
		ran = true
	})
	if ran {
		t.Fatal("a database test ran without MAILROUTE_PEERS=1")
	}
}

func enqueue(t *testing.T, s mailroute.QueueStore, due time.Time, rcpt string) *mailroute.QueuedMessage {
	t.Helper()
	m := &mailroute.QueuedMessage{From: "a@sender.test", Created: queuetest.T0,
		Recipients: []mailroute.QueuedRecipient{{Rcpt: rcpt, Queued: queuetest.T0, NextAttempt: due}}}
	if err := s.Enqueue(context.Background(), m, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	return m
}

// An instance whose lease ran out and went to another cannot overwrite the
// new holder's outcome; the new holder's Update goes through.
func TestUpdateAfterLeaseLost(t *testing.T) {
	a, pool := newStore(t)
	b := &riverqueue.Store{Pool: pool}
	ctx := context.Background()
	t0 := queuetest.T0
	enqueue(t, a, t0, "x@dest.test")
	la, err := a.Lease(ctx, mailroute.LeaseRequest{Now: t0, Max: 1, Duration: time.Minute})
	if err != nil || len(la) != 1 {
		t.Fatalf("a: %v %v", la, err)
	}
	lb, err := b.Lease(ctx, mailroute.LeaseRequest{Now: t0.Add(time.Minute), Max: 1, Duration: time.Minute})
	if err != nil || len(lb) != 1 {
		t.Fatalf("b after a's lease: %v %v", lb, err)
	}
	la[0].Recipients = nil // a thinks it delivered
	if err := a.Update(ctx, la[0]); !errors.Is(err, riverqueue.ErrLeaseLost) {
		t.Fatalf("a's late Update: %v, want ErrLeaseLost", err)
	}
	if err := a.Release(ctx, la[0].ID, la[0].Lease); err != nil {
		t.Fatalf("a's late Release: %v", err)
	}
	l, _ := b.List(ctx)
	if len(l) != 1 {
		t.Fatalf("a's late Update changed the queue: %d messages", len(l))
	}
	lb[0].Recipients[0].Attempts = 1
	lb[0].Recipients[0].NextAttempt = t0.Add(time.Hour)
	if err := b.Update(ctx, lb[0]); err != nil {
		t.Fatalf("b's Update: %v", err)
	}
	if got, _ := a.Lease(ctx, mailroute.LeaseRequest{Now: t0.Add(59 * time.Minute), Max: 1, Duration: time.Minute}); len(got) != 0 {
		t.Fatalf("leased before b's schedule: %v", got)
	}
}

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	pool := newDB(t)
	ctx := context.Background()
	s := &riverqueue.Store{Pool: pool}
	if _, err := s.List(ctx); err == nil || !strings.Contains(err.Error(), "Migrate") {
		t.Errorf("List before Migrate: %v, want a hint to call Migrate", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = (&riverqueue.Store{Pool: pool}).Migrate(ctx)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: Migrate: %v", i, err)
		}
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	var v int
	// Version 2 added mailroute_state (state.go), 3 the claim's index, 4
	// the expired state's index, 5 the REQUIRETLS mark.
	if err := pool.QueryRow(ctx, `SELECT max(version) FROM mailroute_migration`).Scan(&v); err != nil || v != 5 {
		t.Errorf("version %d, %v", v, err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM mailroute_migration`).Scan(&n); err != nil || n != 5 {
		t.Errorf("%d migration rows, %v: a migration ran twice or not at all", n, err)
	}
}

func TestBodyLimit(t *testing.T) {
	s, pool := newStore(t)
	s.MaxBodySize = 1000
	ctx := context.Background()
	m := &mailroute.QueuedMessage{From: "a@sender.test", Recipients: []mailroute.QueuedRecipient{{Rcpt: "x@dest.test"}}}
	if err := s.Enqueue(ctx, m, strings.NewReader(strings.Repeat("x", 1001))); !errors.Is(err, riverqueue.ErrTooLarge) {
		t.Fatalf("Enqueue over the limit: %v", err)
	}
	var jobs int
	pool.QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&jobs)
	if jobs != 0 {
		t.Errorf("%d River jobs left by a refused message", jobs)
	}
	if err := s.Enqueue(ctx, m, strings.NewReader(strings.Repeat("x", 1000))); err != nil {
		t.Fatalf("Enqueue at the limit: %v", err)
	}
}

// One job per message, in the store's queue, scheduled at the earliest
// next attempt; River's view stays consistent through Update.
func TestRiverJobs(t *testing.T) {
	s, pool := newStore(t)
	ctx := context.Background()
	t0 := queuetest.T0
	m := &mailroute.QueuedMessage{From: "a@sender.test", Created: t0, Recipients: []mailroute.QueuedRecipient{
		{Rcpt: "x@dest.test", NextAttempt: t0.Add(time.Hour)}, {Rcpt: "y@dest.test", NextAttempt: t0.Add(time.Minute)}}}
	if err := s.Enqueue(ctx, m, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	var (
		kind, queue string
		at          time.Time
	)
	if err := pool.QueryRow(ctx, `SELECT kind, queue, scheduled_at FROM river_job`).Scan(&kind, &queue, &at); err != nil {
		t.Fatal(err)
	}
	if kind != riverqueue.Kind || queue != riverqueue.DefaultQueue || !at.Equal(t0.Add(time.Minute)) {
		t.Errorf("job %s %s %v", kind, queue, at)
	}
	l, _ := s.Lease(ctx, mailroute.LeaseRequest{Now: t0.Add(time.Minute), Max: 10, Duration: time.Minute})
	if len(l) != 1 {
		t.Fatalf("leased %d", len(l))
	}
	l[0].Recipients = l[0].Recipients[:1]
	if err := s.Update(ctx, l[0]); err != nil {
		t.Fatal(err)
	}
	var attempt int
	if err := pool.QueryRow(ctx, `SELECT scheduled_at, attempt FROM river_job`).Scan(&at, &attempt); err != nil {
		t.Fatal(err)
	}
	if !at.Equal(t0.Add(time.Hour)) || attempt != 1 {
		t.Errorf("after Update: scheduled %v, attempt %d", at, attempt)
	}
	// Another queue of the same database sees nothing.
	other := &riverqueue.Store{Pool: pool, Queue: "other"}
	if l, err := other.List(ctx); err != nil || len(l) != 0 {
		t.Errorf("other queue lists %d, %v", len(l), err)
	}
}
