// Package queuetest checks that a mailroute.QueueStore keeps the contract the
// Mailer relies on: one test suite for every store, the embedded directory
// store (mailroute/spool) and a database store alike.
//
//	func TestConformance(t *testing.T) {
//		queuetest.Run(t, func(t *testing.T) mailroute.QueueStore {
//			return &spool.Store{Dir: t.TempDir(), NoSync: true}
//		})
//	}
//
// [Run] drives the store directly with explicit times (enqueue, list and
// body; lease of what is due and only that, up to max, earliest first;
// leases that hide a message until they end or until Update or Release;
// a flush's lease, which takes what is not due but never what is leased;
// lease tokens: a re-lease fences the old token, which then changes
// nothing by Update, Release or Quarantine, and a token is spent once its
// lease ended; Update that reschedules, keeps some recipients or deletes;
// Quarantine; the REQUIRETLS mark kept through Lease, Update and List;
// concurrent leasers that never get the same message), then
// through a real Mailer against a loopback MX (a Flush during a worker's
// attempt that leaves it to the worker, retry after a deferral, fallback
// to the relay after RetryPolicy.FallbackAfter deferred direct
// attempts, give-up after MaxAge), on a schedule of milliseconds since the
// Mailer's clock is the real one. [RunShared] adds what a store shared by
// several instances promises: two Store values on one backend lease
// exclusively, flush included, and a take-over by one fences the other's
// token. [RunReopen] checks, through a Mailer, what a durable store keeps
// across a restart: a REQUIRETLS message's mark, so that its retries stay
// under it.
//
// newStore is called once per subtest and must return an empty store of
// its own; it registers its own cleanup with t.
package queuetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
)

// T0 is the time the store-level tests start at.
var T0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

const body1 = "From: a@sender.test\r\nTo: x@dest.test\r\nSubject: one\r\n\r\nfirst body\r\n"

// Run runs the conformance suite against the stores newStore returns.
func Run(t *testing.T, newStore func(t *testing.T) mailroute.QueueStore) {
	t.Run("EnqueueListBody", func(t *testing.T) { testEnqueueListBody(t, newStore(t)) })
	t.Run("EnqueueRefusesNoRecipients", func(t *testing.T) { testEnqueueNoRecipients(t, newStore(t)) })
	t.Run("LeaseOnlyDue", func(t *testing.T) { testLeaseOnlyDue(t, newStore(t)) })
	t.Run("LeaseMaxEarliestFirst", func(t *testing.T) { testLeaseMax(t, newStore(t)) })
	t.Run("LeaseHidesUntilExpiry", func(t *testing.T) { testLeaseExpiry(t, newStore(t)) })
	t.Run("UpdateReschedules", func(t *testing.T) { testUpdateReschedules(t, newStore(t)) })
	t.Run("UpdateKeepsSomeRecipients", func(t *testing.T) { testUpdatePartial(t, newStore(t)) })
	t.Run("UpdateWithoutRecipientsDeletes", func(t *testing.T) { testUpdateDeletes(t, newStore(t)) })
	t.Run("Release", func(t *testing.T) { testRelease(t, newStore(t)) })
	t.Run("ReLeaseFencesTheOldLease", func(t *testing.T) {
		s := newStore(t)
		testTakeOver(t, s, s)
	})
	t.Run("TokensEndWithTheLease", func(t *testing.T) { testTokensEnd(t, newStore(t)) })
	t.Run("FlushLeasesOnlyUnleased", func(t *testing.T) { testFlushLease(t, newStore(t)) })
	t.Run("Quarantine", func(t *testing.T) { testQuarantine(t, newStore(t)) })
	t.Run("RequireTLSMark", func(t *testing.T) { testRequireTLSMark(t, newStore(t)) })
	t.Run("ConcurrentLeasers", func(t *testing.T) {
		s := newStore(t)
		testConcurrentLeasers(t, s, s)
	})
	t.Run("Mailer", func(t *testing.T) { runMailer(t, newStore) })
}

// RunShared runs the checks for a store shared by several instances:
// newPair returns two store values on one empty backend, as two processes
// would hold them.
func RunShared(t *testing.T, newPair func(t *testing.T) (a, b mailroute.QueueStore)) {
	t.Run("LeaseIsExclusive", func(t *testing.T) {
		a, b := newPair(t)
		ctx := context.Background()
		id := enqueue(t, a, "", T0, "x@dest.test")
		if got := lease(t, a, T0, 10, time.Minute); !slices.Equal(got, []string{id}) {
			t.Fatalf("a leased %v", got)
		}
		if got := lease(t, b, T0, 10, time.Minute); len(got) != 0 {
			t.Fatalf("b leased %v while a holds it", got)
		}
		if got := leaseMsgs(t, b, T0.Add(30*time.Second), 10, time.Minute, T0.Add(time.Hour)); len(got) != 0 {
			t.Fatalf("b's flush leased %v while a holds it", ids(got))
		}
		bl := leaseMsgs(t, b, T0.Add(time.Minute), 10, time.Minute)
		if !slices.Equal(ids(bl), []string{id}) {
			t.Fatalf("after a's lease ended, b leased %v", ids(bl))
		}
		if got := lease(t, a, T0.Add(90*time.Second), 10, time.Minute); len(got) != 0 {
			t.Fatalf("a leased %v while b holds it", got)
		}
		if err := b.Release(ctx, id, bl[0].Lease); err != nil {
			t.Fatal(err)
		}
		if got := lease(t, a, T0.Add(90*time.Second), 10, time.Minute); !slices.Equal(got, []string{id}) {
			t.Fatalf("after b released it, a leased %v", got)
		}
	})
	t.Run("ConcurrentLeasers", func(t *testing.T) {
		a, b := newPair(t)
		testConcurrentLeasers(t, a, b)
	})
	t.Run("TakeOverFencesTheOldLease", func(t *testing.T) {
		a, b := newPair(t)
		testTakeOver(t, a, b)
	})
}

// enqueue stores a message due at due for rcpts and returns its ID.
func enqueue(t *testing.T, s mailroute.QueueStore, from string, due time.Time, rcpts ...string) string {
	t.Helper()
	m := &mailroute.QueuedMessage{From: from, Created: T0}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, mailroute.QueuedRecipient{Rcpt: r, Queued: T0, NextAttempt: due})
	}
	if err := s.Enqueue(context.Background(), m, strings.NewReader(body1)); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if m.ID == "" {
		t.Fatal("Enqueue assigned no ID")
	}
	return m.ID
}

// leaseMsgs leases at now; a dueBy, when given, is the cutoff for what is
// due (a flush's).
func leaseMsgs(t *testing.T, s mailroute.QueueStore, now time.Time, max int, d time.Duration, dueBy ...time.Time) []*mailroute.QueuedMessage {
	t.Helper()
	req := mailroute.LeaseRequest{Now: now, Max: max, Duration: d}
	if len(dueBy) > 0 {
		req.DueBy = dueBy[0]
	}
	msgs, err := s.Lease(context.Background(), req)
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	for _, m := range msgs {
		if m.Lease == "" {
			t.Fatalf("Lease returned %s without a token", m.ID)
		}
		if !m.LeaseUntil.After(now) {
			t.Fatalf("Lease returned %s with LeaseUntil %v, not after now %v", m.ID, m.LeaseUntil, now)
		}
	}
	return msgs
}

func lease(t *testing.T, s mailroute.QueueStore, now time.Time, max int, d time.Duration) []string {
	t.Helper()
	return ids(leaseMsgs(t, s, now, max, d))
}

func ids(msgs []*mailroute.QueuedMessage) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func list(t *testing.T, s mailroute.QueueStore) []*mailroute.QueuedMessage {
	t.Helper()
	l, err := s.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return l
}

func byID(t *testing.T, s mailroute.QueueStore, id string) *mailroute.QueuedMessage {
	t.Helper()
	for _, m := range list(t, s) {
		if m.ID == id {
			return m
		}
	}
	return nil
}

func readBody(t *testing.T, s mailroute.QueueStore, id string) []byte {
	t.Helper()
	rc, err := s.Body(context.Background(), id)
	if err != nil {
		t.Fatalf("Body(%s): %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Body(%s): reading: %v", id, err)
	}
	return b
}

func sameRecipient(a, b mailroute.QueuedRecipient) bool {
	return a.Rcpt == b.Rcpt && a.Attempts == b.Attempts && a.DirectAttempts == b.DirectAttempts &&
		a.NextAttempt.Equal(b.NextAttempt) && a.Queued.Equal(b.Queued) && a.LastError == b.LastError
}

func testEnqueueListBody(t *testing.T, s mailroute.QueueStore) {
	ctx := context.Background()
	m := &mailroute.QueuedMessage{From: "a@sender.test", Created: T0, Recipients: []mailroute.QueuedRecipient{
		{Rcpt: "x@dest.test", Attempts: 1, DirectAttempts: 1, NextAttempt: T0.Add(5 * time.Minute), Queued: T0,
			LastError: "450 4.2.0 Greylisted, try again later"},
		{Rcpt: "y@other.test", NextAttempt: T0, Queued: T0},
	}}
	want := slices.Clone(m.Recipients)
	if err := s.Enqueue(ctx, m, strings.NewReader(body1)); err != nil {
		t.Fatal(err)
	}
	// A large body and the null sender.
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("b", 998)+"\r\n", 2000)
	nul := &mailroute.QueuedMessage{From: "", Created: T0.Add(time.Second), Recipients: []mailroute.QueuedRecipient{
		{Rcpt: "a@sender.test", NextAttempt: T0, Queued: T0.Add(time.Second)}}}
	if err := s.Enqueue(ctx, nul, strings.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	if m.ID == "" || nul.ID == "" || m.ID == nul.ID {
		t.Fatalf("IDs %q and %q", m.ID, nul.ID)
	}
	l := list(t, s)
	if len(l) != 2 {
		t.Fatalf("List: %d messages, want 2", len(l))
	}
	got := byID(t, s, m.ID)
	if got == nil || got.From != "a@sender.test" || !got.Created.Equal(T0) || len(got.Recipients) != 2 {
		t.Fatalf("listed %+v", got)
	}
	for i := range want {
		if !sameRecipient(got.Recipients[i], want[i]) {
			t.Errorf("recipient %d: %+v, want %+v", i, got.Recipients[i], want[i])
		}
	}
	if g := byID(t, s, nul.ID); g == nil || g.From != "" {
		t.Errorf("null sender listed as %+v", g)
	}
	if b := readBody(t, s, m.ID); string(b) != body1 {
		t.Errorf("body %q", b)
	}
	if b := readBody(t, s, nul.ID); !bytes.Equal(b, []byte(big)) {
		t.Errorf("big body: %d octets back, want %d", len(b), len(big))
	}
	if _, err := s.Body(ctx, "no-such-message"); err == nil {
		t.Error("Body of an unknown ID: no error")
	}
}

func testEnqueueNoRecipients(t *testing.T, s mailroute.QueueStore) {
	m := &mailroute.QueuedMessage{From: "a@sender.test", Created: T0}
	if err := s.Enqueue(context.Background(), m, strings.NewReader(body1)); err == nil {
		t.Error("a message without recipients was accepted")
	}
	if l := list(t, s); len(l) != 0 {
		t.Errorf("List: %d messages", len(l))
	}
}

func testLeaseOnlyDue(t *testing.T, s mailroute.QueueStore) {
	now := enqueue(t, s, "a@sender.test", T0, "now@dest.test")
	later := enqueue(t, s, "a@sender.test", T0.Add(10*time.Minute), "later@dest.test")
	if got := lease(t, s, T0.Add(-time.Second), 10, time.Hour); len(got) != 0 {
		t.Fatalf("leased %v before anything was due", got)
	}
	msgs := leaseMsgs(t, s, T0, 10, time.Hour)
	if !slices.Equal(ids(msgs), []string{now}) {
		t.Fatalf("at T0 leased %v, want [%s]", ids(msgs), now)
	}
	if msgs[0].From != "a@sender.test" || len(msgs[0].Recipients) != 1 || msgs[0].Recipients[0].Rcpt != "now@dest.test" {
		t.Errorf("leased message %+v", msgs[0])
	}
	if got := lease(t, s, T0.Add(10*time.Minute), 10, time.Hour); !slices.Equal(got, []string{later}) {
		t.Fatalf("at T0+10m leased %v, want [%s] (the other is leased)", got, later)
	}
	if l := list(t, s); len(l) != 2 {
		t.Errorf("List shows %d messages, want the 2 leased ones", len(l))
	}
}

func testLeaseMax(t *testing.T, s mailroute.QueueStore) {
	var want []string
	for i := range 5 {
		// Enqueued latest-due first: the lease must sort.
		id := enqueue(t, s, "a@sender.test", T0.Add(-time.Duration(i)*time.Minute), fmt.Sprintf("r%d@dest.test", i))
		want = append([]string{id}, want...)
	}
	var got []string
	for _, n := range []int{2, 2, 1} {
		l := lease(t, s, T0, 2, time.Hour)
		if len(l) != n {
			t.Fatalf("lease of at most 2: %d messages, want %d", len(l), n)
		}
		got = append(got, l...)
	}
	if !slices.Equal(got, want) {
		t.Errorf("leased %v, want the earliest due first: %v", got, want)
	}
	if l := lease(t, s, T0, 2, time.Hour); len(l) != 0 {
		t.Errorf("leased %v once all were leased", l)
	}
}

func testLeaseExpiry(t *testing.T, s mailroute.QueueStore) {
	id := enqueue(t, s, "a@sender.test", T0, "x@dest.test")
	if got := lease(t, s, T0, 10, time.Minute); !slices.Equal(got, []string{id}) {
		t.Fatalf("leased %v", got)
	}
	if got := lease(t, s, T0.Add(59*time.Second), 10, time.Minute); len(got) != 0 {
		t.Fatalf("leased %v during the lease", got)
	}
	if got := lease(t, s, T0.Add(time.Minute), 10, time.Minute); !slices.Equal(got, []string{id}) {
		t.Fatalf("at the end of the lease leased %v, want it again", got)
	}
	if got := lease(t, s, T0.Add(90*time.Second), 10, time.Minute); len(got) != 0 {
		t.Fatalf("the second lease did not hide it: %v", got)
	}
}

func testUpdateReschedules(t *testing.T, s mailroute.QueueStore) {
	ctx := context.Background()
	enqueue(t, s, "a@sender.test", T0, "x@dest.test")
	msgs := leaseMsgs(t, s, T0, 10, time.Hour)
	if len(msgs) != 1 {
		t.Fatalf("leased %d", len(msgs))
	}
	m := msgs[0]
	r := &m.Recipients[0]
	r.Attempts, r.DirectAttempts, r.LastError = 1, 1, "451 4.3.0 try again"
	r.NextAttempt = T0.Add(5 * time.Minute)
	want := *r
	if err := s.Update(ctx, m); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if got := lease(t, s, T0.Add(4*time.Minute), 10, time.Hour); len(got) != 0 {
		t.Fatalf("leased %v before the new next attempt", got)
	}
	got := byID(t, s, m.ID)
	if got == nil || len(got.Recipients) != 1 || !sameRecipient(got.Recipients[0], want) {
		t.Fatalf("after Update, listed %+v, want %+v", got, want)
	}
	again := leaseMsgs(t, s, T0.Add(5*time.Minute), 10, time.Hour)
	if len(again) != 1 || again[0].ID != m.ID || !sameRecipient(again[0].Recipients[0], want) {
		t.Fatalf("at the new next attempt leased %+v", again)
	}
	if b := readBody(t, s, m.ID); string(b) != body1 {
		t.Errorf("body after Update %q", b)
	}
}

func testUpdatePartial(t *testing.T, s mailroute.QueueStore) {
	ctx := context.Background()
	id := enqueue(t, s, "a@sender.test", T0, "x@dest.test", "y@dest.test", "z@dest.test")
	msgs := leaseMsgs(t, s, T0, 10, time.Hour)
	if len(msgs) != 1 || len(msgs[0].Recipients) != 3 {
		t.Fatalf("leased %+v", msgs)
	}
	m := msgs[0]
	keep := m.Recipients[1]
	keep.Attempts, keep.NextAttempt = 1, T0.Add(5*time.Minute)
	m.Recipients = []mailroute.QueuedRecipient{keep}
	if err := s.Update(ctx, m); err != nil {
		t.Fatal(err)
	}
	got := byID(t, s, id)
	if got == nil || len(got.Recipients) != 1 || !sameRecipient(got.Recipients[0], keep) {
		t.Fatalf("after Update listed %+v", got)
	}
	if b := readBody(t, s, id); string(b) != body1 {
		t.Errorf("body %q", b)
	}
	if l := lease(t, s, T0.Add(5*time.Minute), 10, time.Hour); !slices.Equal(l, []string{id}) {
		t.Errorf("leased %v", l)
	}
}

func testUpdateDeletes(t *testing.T, s mailroute.QueueStore) {
	ctx := context.Background()
	id := enqueue(t, s, "a@sender.test", T0, "x@dest.test")
	other := enqueue(t, s, "a@sender.test", T0.Add(time.Hour), "y@dest.test")
	msgs := leaseMsgs(t, s, T0, 10, time.Hour)
	if len(msgs) != 1 {
		t.Fatalf("leased %d", len(msgs))
	}
	msgs[0].Recipients = nil
	if err := s.Update(ctx, msgs[0]); err != nil {
		t.Fatal(err)
	}
	if l := list(t, s); len(l) != 1 || l[0].ID != other {
		t.Fatalf("after Update without recipients, List: %v", ids(l))
	}
	if rc, err := s.Body(ctx, id); err == nil {
		rc.Close()
		t.Error("the body outlived its message")
	}
	if l := lease(t, s, T0.Add(100*time.Hour), 10, time.Hour); !slices.Equal(l, []string{other}) {
		t.Errorf("leased %v, want only the other message", l)
	}
}

func testRelease(t *testing.T, s mailroute.QueueStore) {
	ctx := context.Background()
	id := enqueue(t, s, "a@sender.test", T0, "x@dest.test")
	first := leaseMsgs(t, s, T0, 10, time.Hour)
	if !slices.Equal(ids(first), []string{id}) {
		t.Fatalf("leased %v", ids(first))
	}
	if err := s.Release(ctx, id, first[0].Lease); err != nil {
		t.Fatalf("Release: %v", err)
	}
	second := leaseMsgs(t, s, T0, 10, time.Hour)
	if !slices.Equal(ids(second), []string{id}) {
		t.Fatalf("after Release leased %v, want it again at once", ids(second))
	}
	if second[0].Lease == first[0].Lease {
		t.Fatalf("the second lease has the first one's token %q", first[0].Lease)
	}
	if err := s.Release(ctx, id, second[0].Lease); err != nil {
		t.Fatal(err)
	}
	if got := lease(t, s, T0.Add(-time.Minute), 10, time.Hour); len(got) != 0 {
		t.Fatalf("Release made it due before its time: %v", got)
	}
	// Releasing what is not leased, or unknown, is harmless.
	if err := s.Release(ctx, id, second[0].Lease); err != nil {
		t.Errorf("Release of an unleased message: %v", err)
	}
	if err := s.Release(ctx, "no-such-message", "1"); err != nil {
		t.Errorf("Release of an unknown message: %v", err)
	}
	if l := list(t, s); len(l) != 1 || len(l[0].Recipients) != 1 {
		t.Errorf("Release changed the message: %+v", l)
	}
}

// testConcurrentLeasers has eight goroutines, half on a and half on b,
// lease everything at once: each message goes to exactly one.
func testConcurrentLeasers(t *testing.T, a, b mailroute.QueueStore) {
	const n = 60
	ctx := context.Background()
	all := make(map[string]bool)
	for i := range n {
		all[enqueue(t, a, "a@sender.test", T0.Add(-time.Duration(i)*time.Second), fmt.Sprintf("r%d@dest.test", i))] = true
	}
	var (
		mu   sync.Mutex
		got  = make(map[string]int)
		wg   sync.WaitGroup
		errs = make(chan error, 8)
	)
	for g := range 8 {
		s := a
		if g%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				msgs, err := s.Lease(ctx, mailroute.LeaseRequest{Now: T0, Max: 3, Duration: time.Hour})
				if err != nil {
					errs <- err
					return
				}
				if len(msgs) == 0 {
					return
				}
				mu.Lock()
				for _, m := range msgs {
					got[m.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Lease: %v", err)
	}
	for id, k := range got {
		if k != 1 {
			t.Errorf("%s leased %d times", id, k)
		}
		if !all[id] {
			t.Errorf("leased unknown %s", id)
		}
	}
	if len(got) != n {
		t.Errorf("%d of %d messages leased", len(got), n)
	}
}
