package mailroute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// editState rewrites a spool state file the way someone editing it by
// hand and recomputing its checksum would: the spool's own checks pass.
func editState(t *testing.T, dir, id string, edit func(payload map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, "queue", id+".json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int             `json:"version"`
		CRC32C  string          `json:"crc32c"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(f.Payload, &p); err != nil {
		t.Fatal(err)
	}
	edit(p)
	if f.Payload, err = json.Marshal(p); err != nil {
		t.Fatal(err)
	}
	f.CRC32C = fmt.Sprintf("%08x", crc32.Checksum(f.Payload, crc32.MakeTable(crc32.Castagnoli)))
	out, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func rcptField(p map[string]any, i int) map[string]any {
	return p["recipients"].([]any)[i].(map[string]any)
}

// State read back from the store is checked like a caller's input: every
// edit here passes the spool's checksum, and none may reach an MX. Each is
// quarantined (moved to corrupt/) with an event per recipient.
func TestQueueQuarantinesTamperedState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(p map[string]any)
		body  func(dir, id string) error // damage the body file instead
		rcpts []string                   // as stored after the edit
		want  string                     // in the event's error
	}{
		{name: "sender with a space", edit: func(p map[string]any) { p["from"] = "a b@sender.test" },
			rcpts: []string{"x@dest.test"}, want: "stored sender"},
		{name: "sender with a parameter", edit: func(p map[string]any) { p["from"] = "a@sender.test> RET=FULL" },
			rcpts: []string{"x@dest.test"}, want: "stored sender"},
		{name: "recipient not an address", edit: func(p map[string]any) { rcptField(p, 0)["rcpt"] = "not-an-address" },
			rcpts: []string{"not-an-address"}, want: "stored recipient 1"},
		{name: "recipient with a parameter", edit: func(p map[string]any) { rcptField(p, 0)["rcpt"] = "x@dest.test> NOTIFY=NEVER" },
			rcpts: []string{"x@dest.test> NOTIFY=NEVER"}, want: "stored recipient 1"},
		{name: "recipient not in Send's form", edit: func(p map[string]any) { rcptField(p, 0)["rcpt"] = "x@DEST.test" },
			rcpts: []string{"x@DEST.test"}, want: "not in the form Send stores"},
		{name: "recipient twice", edit: func(p map[string]any) {
			p["recipients"] = append(p["recipients"].([]any), p["recipients"].([]any)[0])
		}, rcpts: []string{"x@dest.test", "x@dest.test"}, want: "listed twice"},
		{name: "no recipients", edit: func(p map[string]any) { p["recipients"] = []any{} },
			want: "no recipients"},
		{name: "negative attempts", edit: func(p map[string]any) { rcptField(p, 0)["attempts"] = -1 },
			rcpts: []string{"x@dest.test"}, want: "attempts -1"},
		{name: "huge last error", edit: func(p map[string]any) { rcptField(p, 0)["last_error"] = strings.Repeat("e", 70<<10) },
			rcpts: []string{"x@dest.test"}, want: "last error"},
		{name: "body with NUL, checksum recomputed", rcpts: []string{"x@dest.test"}, want: "NUL"},
		{name: "body changed, checksum not", body: func(dir, id string) error {
			return os.WriteFile(filepath.Join(dir, "queue", id+".eml"), []byte(strings.Replace(testBody, "Hello", "Hullo", 1)), 0o600)
		}, rcpts: []string{"x@dest.test"}, want: "checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDirectWorld(t)
			s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
			w.dns.MX("dest.test", "mx.dest.test")
			dir := t.TempDir()
			first := &Spool{Dir: dir, NoSync: true}
			clock := newFakeClock()
			qm := &QueuedMessage{From: "a@sender.test", Created: clock.Now(), Recipients: []QueuedRecipient{
				{Rcpt: "x@dest.test", Queued: clock.Now(), NextAttempt: clock.Now()}}}
			if err := first.Enqueue(context.Background(), qm, strings.NewReader(testBody)); err != nil {
				t.Fatal(err)
			}
			first.Close()
			switch {
			case tc.edit != nil:
				editState(t, dir, qm.ID, tc.edit)
			case tc.want == "NUL":
				bad := strings.Replace(testBody, "Hello", "Hel\x00lo", 1)
				if err := os.WriteFile(filepath.Join(dir, "queue", qm.ID+".eml"), []byte(bad), 0o600); err != nil {
					t.Fatal(err)
				}
				editState(t, dir, qm.ID, func(p map[string]any) {
					p["body_size"] = len(bad)
					p["body_crc32c"] = crc32.Checksum([]byte(bad), crc32.MakeTable(crc32.Castagnoli))
				})
			default:
				if err := tc.body(dir, qm.ID); err != nil {
					t.Fatal(err)
				}
			}
			sp := &Spool{Dir: dir, NoSync: true}
			defer sp.Close()
			events := &eventLog{}
			m := w.queued(Config{Queue: sp}, clock, events)
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
			if l, err := sp.List(context.Background()); err != nil || len(l) != 0 {
				t.Errorf("still queued: %+v, %v", l, err)
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "corrupt")); len(ents) == 0 {
				t.Error("nothing kept in corrupt/ for an operator")
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
	*Spool
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
			sp := &Spool{Dir: t.TempDir(), NoSync: true}
			defer sp.Close()
			store := &failingUpdate{Spool: sp, err: errors.New("disk on fire")}
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
