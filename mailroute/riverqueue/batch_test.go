package riverqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/queuetest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// roundTrips counts what a pool sends: each statement outside a batch,
// each batch and each COPY is one round trip.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	if ctx.Value(inBatch{}) == nil {
		r.n.Add(1)
	}
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return context.WithValue(ctx, inBatch{}, true)
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (r *roundTrips) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceCopyFromStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

type inBatch struct{}

// tracedStore is a migrated Store on a pool whose round trips are counted.
func tracedStore(t *testing.T) (*riverqueue.Store, *pgxpool.Pool, *roundTrips) {
	t.Helper()
	_, pool := newStore(t)
	rt := &roundTrips{}
	cfg := pool.Config()
	cfg.ConnConfig.Tracer = rt
	traced, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(traced.Close)
	return &riverqueue.Store{Pool: traced}, pool, rt
}

func batchOf(n int, prefix string, due time.Time) []riverqueue.BatchMessage {
	out := make([]riverqueue.BatchMessage, n)
	for i := range out {
		out[i] = riverqueue.BatchMessage{
			Message: &mailroute.QueuedMessage{From: "a@sender.test", Created: queuetest.T0,
				Recipients: []mailroute.QueuedRecipient{{Rcpt: fmt.Sprintf("%s%d@dest.test", prefix, i), Queued: queuetest.T0, NextAttempt: due}}},
			Body: strings.NewReader(fmt.Sprintf("Subject: %s%d\r\n\r\nbody %d\r\n", prefix, i, i)),
		}
	}
	return out
}

func count(t *testing.T, pool *pgxpool.Pool, sql string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A batch is stored whole, each message as Enqueue stores it, in the same
// number of round trips whatever its size; a bad message stores none.
func TestEnqueueBatch(t *testing.T) {
	s, pool, rt := tracedStore(t)
	ctx := context.Background()
	t0 := queuetest.T0
	if err := s.EnqueueBatch(ctx, batchOf(3, "warm", t0)); err != nil { // River's first-use queries
		t.Fatal(err)
	}
	trips := map[int]int64{}
	for _, n := range []int{10, 500} {
		b := batchOf(n, fmt.Sprintf("n%d-", n), t0.Add(time.Duration(n)*time.Second))
		b[0].Message.ID = fmt.Sprintf("mine-%d", n)
		before := rt.n.Load()
		if err := s.EnqueueBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		trips[n] = rt.n.Load() - before
		for i, m := range b {
			if m.Message.ID == "" {
				t.Fatalf("message %d of %d has no ID", i, n)
			}
		}
		if b[0].Message.ID != fmt.Sprintf("mine-%d", n) {
			t.Errorf("the caller's ID became %s", b[0].Message.ID)
		}
		body, err := s.Body(ctx, b[n-1].Message.ID)
		if err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		_, _ = fmt.Fprint(&got, mustRead(t, body))
		if want := fmt.Sprintf("Subject: n%d-%d\r\n\r\nbody %d\r\n", n, n-1, n-1); got.String() != want {
			t.Errorf("body of the last message: %q, want %q", got.String(), want)
		}
	}
	// BEGIN, River's InsertMany, the COPY, COMMIT, and the notification.
	if trips[10] != 5 || trips[500] != 5 {
		t.Errorf("round trips: %d for 10 messages, %d for 500; want 5 each", trips[10], trips[500])
	}
	if n := count(t, pool, `SELECT count(*) FROM river_job WHERE kind = 'mailroute_message'`); n != 513 {
		t.Errorf("%d River jobs, want 513", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM mailroute_message m JOIN river_job j ON j.id = m.job_id
		WHERE j.scheduled_at = m.next_attempt`); n != 513 {
		t.Errorf("%d jobs scheduled at their message's next attempt, want 513", n)
	}
	// Due in order of next attempt, like any message.
	l, err := s.Lease(ctx, mailroute.LeaseRequest{Now: t0.Add(10 * time.Second), Max: 100, Duration: time.Minute})
	if err != nil || len(l) != 13 {
		t.Fatalf("leased %d at +10s, want the 3 + 10 due: %v", len(l), err)
	}

	// Refused as a whole: a body over the limit, a duplicate ID, an ID
	// already queued, a message without recipients.
	small := &riverqueue.Store{Pool: s.Pool, MaxBodySize: 100}
	big := batchOf(5, "big", t0)
	big[3].Body = strings.NewReader(strings.Repeat("x", 101))
	if err := small.EnqueueBatch(ctx, big); !errors.Is(err, riverqueue.ErrTooLarge) {
		t.Errorf("a body over the limit: %v", err)
	}
	dup := batchOf(3, "dup", t0)
	dup[0].Message.ID, dup[2].Message.ID = "same", "same"
	if err := s.EnqueueBatch(ctx, dup); err == nil {
		t.Error("a batch with a duplicate ID was stored")
	}
	again := batchOf(3, "again", t0)
	again[1].Message.ID = "mine-10"
	if err := s.EnqueueBatch(ctx, again); err == nil || !strings.Contains(err.Error(), "already queued") {
		t.Errorf("an ID already queued: %v", err)
	}
	none := batchOf(2, "none", t0)
	none[1].Message.Recipients = nil
	if err := s.EnqueueBatch(ctx, none); err == nil {
		t.Error("a message without recipients was stored")
	}
	if n := count(t, pool, `SELECT count(*) FROM river_job`); n != 513 {
		t.Errorf("%d River jobs after refused batches, want 513", n)
	}
}

// Under WithTx the batch is the caller's transaction's: a rollback leaves
// nothing, a commit everything.
func TestEnqueueBatchTx(t *testing.T) {
	s, pool := newStore(t)
	ctx := context.Background()
	for _, commit := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.EnqueueBatch(riverqueue.WithTx(ctx, tx), batchOf(20, fmt.Sprintf("c%v", commit), queuetest.T0)); err != nil {
			t.Fatal(err)
		}
		if n := count(t, pool, `SELECT count(*) FROM mailroute_message`); n != 0 {
			t.Fatalf("%d messages visible before the commit", n)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.List(ctx)
	if err != nil || len(l) != 20 {
		t.Fatalf("listed %d, want the 20 committed: %v", len(l), err)
	}
	for _, m := range l {
		if !strings.HasPrefix(m.Recipients[0].Rcpt, "ctrue") {
			t.Errorf("%s from the rolled-back batch", m.Recipients[0].Rcpt)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM river_job`); n != 20 {
		t.Errorf("%d River jobs, want 20", n)
	}
}

// The attempt's own queries: Lease is one round trip and brings the body
// along; Body then costs none; Update and Release are one each when
// alone (concurrent ones share one: TestOutcomesShareACommit).
func TestAttemptRoundTrips(t *testing.T) {
	s, _, rt := tracedStore(t)
	ctx := context.Background()
	t0 := queuetest.T0
	if err := s.EnqueueBatch(ctx, batchOf(3, "rt", t0)); err != nil {
		t.Fatal(err)
	}
	step := func(what string, want int64, f func() error) {
		t.Helper()
		before := rt.n.Load()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := rt.n.Load() - before; got != want {
			t.Errorf("%s: %d round trips, want %d", what, got, want)
		}
	}
	var l []*mailroute.QueuedMessage
	step("Lease", 1, func() (err error) {
		l, err = s.Lease(ctx, mailroute.LeaseRequest{Now: t0, Max: 3, Duration: time.Minute})
		if err == nil && len(l) != 3 {
			err = fmt.Errorf("leased %d", len(l))
		}
		return err
	})
	step("Body after Lease", 0, func() error {
		b, err := s.Body(ctx, l[0].ID)
		if err == nil && !strings.HasPrefix(mustRead(t, b), "Subject: rt") {
			err = errors.New("wrong body")
		}
		return err
	})
	step("Body again", 1, func() error { _, err := s.Body(ctx, l[0].ID); return err })
	step("Update (delivered)", 1, func() error { l[0].Recipients = nil; return s.Update(ctx, l[0]) })
	step("Update (deferred)", 1, func() error {
		l[1].Recipients[0].NextAttempt = t0.Add(time.Hour)
		return s.Update(ctx, l[1])
	})
	step("Release", 1, func() error { return s.Release(ctx, l[2].ID, l[2].Lease) })
	step("Update with a spent lease", 1, func() error {
		if err := s.Update(ctx, l[1]); !errors.Is(err, riverqueue.ErrLeaseLost) {
			return fmt.Errorf("got %v, want ErrLeaseLost", err)
		}
		return nil
	})
}

func mustRead(t *testing.T, r interface {
	Read([]byte) (int, error)
	Close() error
}) string {
	t.Helper()
	defer r.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}
