package spool_test

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// editState rewrites a state file of the store the way someone editing it by
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

// What a Mailer reads back from the directory is checked like a caller's
// input: every edit here passes the store's own checksum (or is caught by
// it), and none may reach an MX. Each is quarantined — moved to corrupt/
// for an operator — with an event per recipient, once and for good.
func TestTamperedFilesQuarantined(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(p map[string]any)
		body  func(dir, id string) error // damage a file instead
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
		// Unreadable when the store opens: its recipients are unknown, so
		// one event without a recipient (mailroute.QuarantineReporter).
		{name: "state truncated", body: func(dir, id string) error {
			return os.Truncate(filepath.Join(dir, "queue", id+".json"), 20)
		}, want: "corrupt entry quarantined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, mailtest.Options{})
			dir := t.TempDir()
			first := &spool.Store{Dir: dir, NoSync: true}
			now := time.Now()
			qm := &mailroute.QueuedMessage{From: "a@sender.test", Created: now, Recipients: []mailroute.QueuedRecipient{
				{Rcpt: "x@dest.test", Queued: now, NextAttempt: now}}}
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
			sp := &spool.Store{Dir: dir, NoSync: true}
			defer sp.Close()
			m := w.mailer(t, sp, mailroute.Config{})
			flush(t, m)
			// The worker's first round may have taken it first.
			want := len(tc.rcpts)
			if want == 0 {
				want = 1 // one event without a recipient
			}
			events := w.events
			events.wait(t, want)

			if n := w.mx.Connections(); n != 0 {
				t.Errorf("the MX got %d connections from a tampered entry", n)
			}
			got := events.all()
			if len(got) != want {
				t.Fatalf("%d events %+v, want %d quarantined", len(got), got, want)
			}
			for i, ev := range got {
				if ev.Kind != mailroute.EventQuarantined || ev.QueueID != qm.ID || ev.Err == nil || !strings.Contains(ev.Err.Error(), tc.want) {
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
			flush(t, m) // whatever the schedule
			if n := len(events.all()); n != want {
				t.Errorf("%d events after another round, want still %d: quarantined once, for good", n, want)
			}
		})
	}
}
