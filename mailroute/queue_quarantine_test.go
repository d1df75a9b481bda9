package mailroute

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// State read back from the store is checked like a caller's input: a
// store whose content was changed behind the Mailer's back (by hand, by a
// bug, by an attacker with access to it) must not send any of it to an MX.
// Each is quarantined with an event per recipient, once and for good.
// (mailroute/spool's TestTamperedFilesQuarantined does the same to the
// directory store's files, checksums recomputed.)
func TestQueueQuarantinesTamperedState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(m *QueuedMessage, body *[]byte)
		aside bool     // the store sets it aside on its own instead (QuarantineReporter)
		rcpts []string // as stored after the edit
		want  string   // in the event's error
	}{
		{name: "sender with a space", edit: func(m *QueuedMessage, _ *[]byte) { m.From = "a b@sender.test" },
			rcpts: []string{"x@dest.test"}, want: "stored sender"},
		{name: "sender with a parameter", edit: func(m *QueuedMessage, _ *[]byte) { m.From = "a@sender.test> RET=FULL" },
			rcpts: []string{"x@dest.test"}, want: "stored sender"},
		{name: "recipient not an address", edit: func(m *QueuedMessage, _ *[]byte) { m.Recipients[0].Rcpt = "not-an-address" },
			rcpts: []string{"not-an-address"}, want: "stored recipient 1"},
		{name: "recipient with a parameter", edit: func(m *QueuedMessage, _ *[]byte) { m.Recipients[0].Rcpt = "x@dest.test> NOTIFY=NEVER" },
			rcpts: []string{"x@dest.test> NOTIFY=NEVER"}, want: "stored recipient 1"},
		{name: "recipient not in Send's form", edit: func(m *QueuedMessage, _ *[]byte) { m.Recipients[0].Rcpt = "x@DEST.test" },
			rcpts: []string{"x@DEST.test"}, want: "not in the form Send stores"},
		{name: "recipient twice", edit: func(m *QueuedMessage, _ *[]byte) { m.Recipients = append(m.Recipients, m.Recipients[0]) },
			rcpts: []string{"x@dest.test", "x@dest.test"}, want: "listed twice"},
		{name: "no recipients", edit: func(m *QueuedMessage, _ *[]byte) { m.Recipients = nil },
			want: "no recipients"},
		{name: "negative attempts", edit: func(m *QueuedMessage, _ *[]byte) { m.Recipients[0].Attempts = -1 },
			rcpts: []string{"x@dest.test"}, want: "attempts -1"},
		{name: "huge last error", edit: func(m *QueuedMessage, _ *[]byte) { m.Recipients[0].LastError = strings.Repeat("e", 70<<10) },
			rcpts: []string{"x@dest.test"}, want: "last error"},
		{name: "body with NUL", edit: func(_ *QueuedMessage, b *[]byte) { *b = []byte(strings.Replace(testBody, "Hello", "Hel\x00lo", 1)) },
			rcpts: []string{"x@dest.test"}, want: "NUL"},
		{name: "set aside by the store", aside: true, want: "unreadable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDirectWorld(t)
			s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
			w.dns.MX("dest.test", "mx.dest.test")
			store := newMemQueue()
			clock := newFakeClock()
			qm := &QueuedMessage{From: "a@sender.test", Created: clock.Now(), Recipients: []QueuedRecipient{
				{Rcpt: "x@dest.test", Queued: clock.Now(), NextAttempt: clock.Now()}}}
			if err := store.Enqueue(context.Background(), qm, strings.NewReader(testBody)); err != nil {
				t.Fatal(err)
			}
			if tc.aside {
				store.setAside(qm.ID, fmt.Errorf("%w: state unreadable", ErrCorrupt))
			} else {
				store.edit(qm.ID, tc.edit)
			}
			events := &eventLog{}
			m := w.queued(Config{Queue: store}, clock, events)
			m.runQueue(t)
			// The worker's first round may have leased it first.
			want := len(tc.rcpts)
			if want == 0 {
				want = 1 // one event without a recipient
			}
			waitEvents(t, events, want)

			if n := s.Connections(); n != 0 {
				t.Errorf("the MX got %d connections from a tampered entry", n)
			}
			events.mu.Lock()
			got := append([]Event(nil), events.events...)
			events.mu.Unlock()
			if len(got) != want {
				t.Fatalf("%d events %+v, want %d quarantined", len(got), got, want)
			}
			for i, ev := range got {
				if ev.Kind != EventQuarantined || ev.QueueID != qm.ID || ev.Err == nil || !strings.Contains(ev.Err.Error(), tc.want) {
					t.Errorf("event %+v, want quarantined with %q", ev, tc.want)
				}
				if len(tc.rcpts) > 0 && ev.Rcpt != tc.rcpts[i] {
					t.Errorf("event for %q, want %q", ev.Rcpt, tc.rcpts[i])
				}
			}
			if l, err := store.List(context.Background()); err != nil || len(l) != 0 {
				t.Errorf("still queued: %+v, %v", l, err)
			}
			if r := store.quarantined(qm.ID); !tc.aside && (r == nil || !strings.Contains(r.Error(), tc.want)) {
				t.Errorf("the store was asked to quarantine it for %v, want %q", r, tc.want)
			}
			clock.Advance(24 * time.Hour)
			m.runQueue(t)
			events.mu.Lock()
			n := len(events.events)
			events.mu.Unlock()
			if n != want {
				t.Errorf("%d events after another round, want still %d: quarantined once, for good", n, want)
			}
		})
	}
}

// failingUpdate is a store whose Update fails, as a full disk or a lost
// database would.
type failingUpdate struct {
	*MemoryQueue
	err error
}

func (f *failingUpdate) Update(context.Context, *QueuedMessage) error { return f.err }

// A save that fails is reported: the outcome's event (without a
// NextAttempt, since none was stored), then EventNotSaved saying what was
// lost; the stored state is the one before the attempt and no DSN goes
// out for a failure that will be retried.
func TestQueueReportsNotSaved(t *testing.T) {
	for _, tc := range []struct {
		name string
		rcpt *smtp.SMTPError
		kind EventKind
		what string
	}{
		{name: "deferred", rcpt: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"},
			kind: EventDeferred, what: "the next attempt at"},
		{name: "delivered", kind: EventDelivered, what: "the removal from the queue after delivered"},
		{name: "failed", rcpt: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"},
			kind: EventFailed, what: "the removal from the queue after failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDirectWorld(t)
			w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError { return tc.rcpt }})
			relay := smtptest.Start(t, smtptest.Options{}) // where a DSN would go
			w.dns.MX("dest.test", "mx.dest.test")
			sp := newMemQueue()
			store := &failingUpdate{MemoryQueue: sp, err: errors.New("disk on fire")}
			clock, events := newFakeClock(), &eventLog{}
			m := w.queued(Config{Queue: store, DSN: true, Retry: RetryPolicy{FallbackAfter: -1},
				Relay: &Relay{Addr: relay.Addr, InsecurePlaintextLoopback: true}}, clock, events)
			qm := &QueuedMessage{From: "a@sender.test", Created: clock.Now(), Recipients: []QueuedRecipient{
				{Rcpt: "x@dest.test", Queued: clock.Now(), NextAttempt: clock.Now()}}}
			if err := sp.Enqueue(context.Background(), qm, strings.NewReader(testBody)); err != nil {
				t.Fatal(err)
			}
			m.runQueue(t)
			waitEvents(t, events, 2) // the worker's first round may have leased it first
			events.mu.Lock()
			got := append([]Event(nil), events.events...)
			events.mu.Unlock()
			if len(got) != 2 || got[0].Kind != tc.kind || got[1].Kind != EventNotSaved {
				t.Fatalf("events %+v, want %v then not-saved", got, tc.kind)
			}
			if !got[0].NextAttempt.IsZero() {
				t.Errorf("the %v event claims a next attempt at %v that was never stored", tc.kind, got[0].NextAttempt)
			}
			if e := got[1].Err; e == nil || !strings.Contains(e.Error(), tc.what) || !strings.Contains(e.Error(), "disk on fire") {
				t.Errorf("not-saved error %v, want %q and the store's error", e, tc.what)
			}
			l, _ := sp.List(context.Background())
			if len(l) != 1 || l[0].Recipients[0].Attempts != 0 {
				t.Errorf("stored %+v, want the state from before the attempt", l)
			}
			if n := len(relay.Messages()); n != 0 {
				t.Errorf("%d DSNs sent for an outcome that was not saved", n)
			}
		})
	}
}

// waitEvents waits until at least n events were reported.
func waitEvents(t *testing.T, events *eventLog, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		events.mu.Lock()
		k := len(events.events)
		events.mu.Unlock()
		if k >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events in 20 s, want %d", k, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
