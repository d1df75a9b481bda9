package queuetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
)

// testRequireTLSMark: QueuedMessage.RequireTLS is stored by Enqueue and
// comes back from Lease and List, through an Update that reschedules and
// one that drops a recipient, and Update never changes it — not even when
// the copy it is given says otherwise — so the REQUIRETLS mark can be
// neither lost nor gained in the queue. A message without the mark stays
// without it.
func testRequireTLSMark(t *testing.T, s mailroute.QueueStore) {
	ctx := context.Background()
	enq := func(mark bool, rcpts ...string) string {
		t.Helper()
		m := &mailroute.QueuedMessage{From: "a@sender.test", Created: T0, RequireTLS: mark}
		for _, r := range rcpts {
			m.Recipients = append(m.Recipients, mailroute.QueuedRecipient{Rcpt: r, Queued: T0, NextAttempt: T0})
		}
		if err := s.Enqueue(ctx, m, strings.NewReader(body1)); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
		return m.ID
	}
	marked := enq(true, "x@dest.test", "y@dest.test")
	plain := enq(false, "z@dest.test")
	want := map[string]bool{marked: true, plain: false}
	check := func(when string, msgs []*mailroute.QueuedMessage) {
		t.Helper()
		for _, m := range msgs {
			if w, ok := want[m.ID]; ok && m.RequireTLS != w {
				t.Errorf("%s: %s has RequireTLS %v, want %v", when, m.ID, m.RequireTLS, w)
			}
		}
	}
	check("List after Enqueue", list(t, s))

	msgs := leaseMsgs(t, s, T0, 10, time.Hour)
	if len(msgs) != 2 {
		t.Fatalf("leased %d messages, want 2", len(msgs))
	}
	check("Lease", msgs)
	// Each copy comes back with the mark flipped and one attempt more:
	// the store keeps the mark as enqueued and takes the rest.
	for _, m := range msgs {
		m.RequireTLS = !m.RequireTLS
		for i := range m.Recipients {
			m.Recipients[i].Attempts = 1
			m.Recipients[i].NextAttempt = T0.Add(time.Minute)
		}
		if err := s.Update(ctx, m); err != nil {
			t.Fatalf("Update %s: %v", m.ID, err)
		}
	}
	l := list(t, s)
	check("List after Update", l)
	for _, m := range l {
		if len(m.Recipients) == 0 || m.Recipients[0].Attempts != 1 {
			t.Errorf("Update of %s not stored: %+v", m.ID, m.Recipients)
		}
	}

	msgs = leaseMsgs(t, s, T0.Add(time.Minute), 10, time.Hour)
	check("Lease after Update", msgs)
	for _, m := range msgs {
		if m.ID == marked {
			m.Recipients = m.Recipients[1:] // one delivered, one left
		}
		if err := s.Update(ctx, m); err != nil {
			t.Fatalf("Update %s: %v", m.ID, err)
		}
	}
	l = list(t, s)
	if len(l) != 2 {
		t.Fatalf("List: %d messages, want 2", len(l))
	}
	check("List after a partial Update", l)
	if m := byID(t, s, marked); m == nil || len(m.Recipients) != 1 || m.Recipients[0].Rcpt != "y@dest.test" {
		t.Errorf("the marked message after a partial Update: %+v", m)
	}
}
