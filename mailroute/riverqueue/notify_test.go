package riverqueue_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/queuetest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// Notify wakes for mail due now in its queue once its transaction
// commits, and for nothing else. PostgreSQL delivers notifications in
// commit order, so each wake records how many messages are stored at that
// moment: a wake for anything but the expected commits shows up as a
// count of its own. Repeated wakes for one commit are allowed (River's own
// notification may come with the store's).
func TestNotify(t *testing.T) {
	producer, pool := newStore(t)
	other := &riverqueue.Store{Pool: pool, Queue: "other"}
	listener := &riverqueue.Store{Pool: pool}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	counts := make(chan int, 100)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		listener.Notify(ctx, func() { counts <- count(t, pool, `SELECT count(*) FROM mailroute_message`) })
	}()
	var seen []int
	waitFor := func(want int) {
		t.Helper()
		for {
			select {
			case n := <-counts:
				if len(seen) == 0 || seen[len(seen)-1] != n {
					seen = append(seen, n)
				}
				if n >= want {
					return
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no wake at %d messages; wakes at %v", want, seen)
			}
		}
	}
	waitFor(0) // listening: it looks once

	now := time.Now()
	body := "Subject: x\r\n\r\nx\r\n"
	one := func(rcpt string, due time.Time) *mailroute.QueuedMessage {
		return &mailroute.QueuedMessage{From: "a@sender.test", Created: now,
			Recipients: []mailroute.QueuedRecipient{{Rcpt: rcpt, Queued: now, NextAttempt: due}}}
	}
	// Rolled back: never notified.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := producer.EnqueueTx(ctx, tx, "a@sender.test", []string{"rolledback@dest.test"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	// Another queue of the database: not this store's mail (1 stored).
	if err := other.Enqueue(ctx, one("other@dest.test", now), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	// Committed in the caller's transaction, due now (2 stored): wakes.
	tx, err = pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := producer.EnqueueTx(ctx, tx, "a@sender.test", []string{"committed@dest.test"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(2)
	// Due in an hour (3 stored): nothing to start now.
	if err := producer.Enqueue(ctx, one("later@dest.test", now.Add(time.Hour)), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	// A batch due now, in the store's own transaction (8 stored): wakes.
	if err := producer.EnqueueBatch(ctx, batchOf(5, "batch", queuetest.T0)); err != nil {
		t.Fatal(err)
	}
	waitFor(8)
	if !slices.Equal(seen, []int{0, 2, 8}) {
		t.Errorf("woken at %v stored messages, want [0 2 8]", seen)
	}

	// The listening connection dies: Notify connects again, looks once,
	// and wakes for the next commit.
	if n := count(t, pool, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE query LIKE 'LISTEN %' AND query LIKE '%' || current_schema() || '.river_insert%'`); n != 1 {
		t.Fatalf("terminated %d listening connections, want 1", n)
	}
	if err := producer.Enqueue(ctx, one("after@dest.test", now), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	waitFor(9) // the look after reconnecting, or the commit's own
	if err := producer.Enqueue(ctx, one("after2@dest.test", now), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	waitFor(10)

	cancel()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Notify did not return when its context ended")
	}
}
