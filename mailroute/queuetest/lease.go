package queuetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
)

// The lease-token checks: what fences a holder whose lease is over.

// testTakeOver: a's lease runs out and b (the same store, or another
// instance on the same backend) takes the message over. a's token then
// changes nothing: not by Update, not by Release, not by Quarantine.
func testTakeOver(t *testing.T, a, b mailroute.QueueStore) {
	ctx := context.Background()
	id := enqueue(t, a, "a@sender.test", T0, "x@dest.test", "y@dest.test")
	al := leaseMsgs(t, a, T0, 10, time.Minute)
	if !slices.Equal(ids(al), []string{id}) {
		t.Fatalf("a leased %v", ids(al))
	}
	bl := leaseMsgs(t, b, T0.Add(time.Minute), 10, time.Minute)
	if !slices.Equal(ids(bl), []string{id}) {
		t.Fatalf("after a's lease ran out, b leased %v", ids(bl))
	}
	if al[0].Lease == bl[0].Lease {
		t.Fatalf("the take-over kept the token %q", al[0].Lease)
	}
	stale := al[0]
	stale.Recipients = stale.Recipients[:1] // a thinks y was delivered
	stale.Recipients[0].Attempts = 7
	if err := a.Update(ctx, stale); !errors.Is(err, mailroute.ErrLeaseLost) {
		t.Fatalf("Update with the old token: %v, want ErrLeaseLost", err)
	}
	if err := a.Release(ctx, id, al[0].Lease); err != nil {
		t.Fatalf("Release with the old token: %v, want nil (nothing to end)", err)
	}
	if err := a.Quarantine(ctx, id, al[0].Lease, errors.New("test")); !errors.Is(err, mailroute.ErrLeaseLost) {
		t.Fatalf("Quarantine with the old token: %v, want ErrLeaseLost", err)
	}
	// b still holds it: nobody leases it, and its state is untouched.
	if got := lease(t, a, T0.Add(90*time.Second), 10, time.Minute); len(got) != 0 {
		t.Fatalf("leased %v: the old token's Release ended the new lease", got)
	}
	if got := byID(t, b, id); got == nil || len(got.Recipients) != 2 || got.Recipients[0].Attempts != 0 {
		t.Fatalf("the old token's Update changed the message: %+v", got)
	}
	m := bl[0]
	m.Recipients[0].Attempts = 1
	m.Recipients[0].NextAttempt = T0.Add(10 * time.Minute)
	m.Recipients[1].Attempts = 1
	m.Recipients[1].NextAttempt = T0.Add(10 * time.Minute)
	if err := b.Update(ctx, m); err != nil {
		t.Fatalf("Update with the current token: %v", err)
	}
	if got := byID(t, a, id); got == nil || len(got.Recipients) != 2 || got.Recipients[0].Attempts != 1 {
		t.Fatalf("after b's Update: %+v", got)
	}
}

// testTokensEnd: a token is good for one lease only; once Update or
// Release ended it, it changes nothing more.
func testTokensEnd(t *testing.T, s mailroute.QueueStore) {
	ctx := context.Background()
	id := enqueue(t, s, "a@sender.test", T0, "x@dest.test")
	l := leaseMsgs(t, s, T0, 10, time.Hour)
	if len(l) != 1 {
		t.Fatalf("leased %v", ids(l))
	}
	m := l[0]
	m.Recipients[0].Attempts = 1
	if err := s.Update(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.Recipients[0].Attempts = 9
	if err := s.Update(ctx, m); !errors.Is(err, mailroute.ErrLeaseLost) {
		t.Fatalf("a second Update with an ended lease's token: %v, want ErrLeaseLost", err)
	}
	// A copy from List has no lease to present.
	listed := byID(t, s, id)
	listed.Recipients[0].Attempts = 5
	if err := s.Update(ctx, listed); !errors.Is(err, mailroute.ErrLeaseLost) {
		t.Fatalf("Update of a listed copy: %v, want ErrLeaseLost", err)
	}
	// Release after Release: the second must not end a newer lease.
	r1 := leaseMsgs(t, s, T0, 10, time.Hour)
	if err := s.Release(ctx, id, r1[0].Lease); err != nil {
		t.Fatal(err)
	}
	r2 := leaseMsgs(t, s, T0, 10, time.Hour)
	if len(r2) != 1 {
		t.Fatalf("leased %v after Release", ids(r2))
	}
	if err := s.Release(ctx, id, r1[0].Lease); err != nil {
		t.Fatal(err)
	}
	if got := lease(t, s, T0, 10, time.Hour); len(got) != 0 {
		t.Fatalf("an ended lease's Release freed the current one: leased %v", got)
	}
	if got := byID(t, s, id); got.Recipients[0].Attempts != 1 {
		t.Fatalf("attempts %d, want 1", got.Recipients[0].Attempts)
	}
}

// testFlushLease: a flush's lease (a cutoff far ahead) gets messages that
// are not due, but never one under a lease.
func testFlushLease(t *testing.T, s mailroute.QueueStore) {
	far := T0.Add(100 * 365 * 24 * time.Hour)
	busy := enqueue(t, s, "a@sender.test", T0, "busy@dest.test")
	if got := lease(t, s, T0, 10, time.Hour); !slices.Equal(got, []string{busy}) {
		t.Fatalf("leased %v", got)
	}
	later := enqueue(t, s, "a@sender.test", T0.Add(time.Hour), "later@dest.test")
	got := leaseMsgs(t, s, T0.Add(time.Second), 10, time.Hour, far)
	if !slices.Equal(ids(got), []string{later}) {
		t.Fatalf("the flush leased %v, want only %s (not %s, which is leased)", ids(got), later, busy)
	}
	if got := leaseMsgs(t, s, T0.Add(2*time.Second), 10, time.Hour, far); len(got) != 0 {
		t.Fatalf("a second flush leased %v while both are leased", ids(got))
	}
}

// testQuarantine: a quarantined message is gone from the queue's work: not
// leased again, not listed.
func testQuarantine(t *testing.T, s mailroute.QueueStore) {
	ctx := context.Background()
	bad := enqueue(t, s, "a@sender.test", T0, "x@dest.test")
	good := enqueue(t, s, "a@sender.test", T0.Add(time.Second), "y@dest.test")
	l := leaseMsgs(t, s, T0, 1, time.Minute)
	if !slices.Equal(ids(l), []string{bad}) {
		t.Fatalf("leased %v", ids(l))
	}
	if err := s.Quarantine(ctx, bad, l[0].Lease, errors.New("queuetest: tampered")); err != nil {
		t.Fatalf("Quarantine: %v", err)
	}
	if got := ids(list(t, s)); !slices.Equal(got, []string{good}) {
		t.Fatalf("listed %v after the quarantine, want [%s]", got, good)
	}
	if got := lease(t, s, T0.Add(time.Hour), 10, time.Minute); !slices.Equal(got, []string{good}) {
		t.Fatalf("leased %v after the quarantine, want [%s]", got, good)
	}
	if err := s.Release(ctx, bad, l[0].Lease); err != nil {
		t.Errorf("Release after the quarantine: %v", err)
	}
}
