package spool

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is the tests' clock: leases and due times are decided by the now the
// caller passes, so no test depends on the wall clock.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// testMessage is a message whose recipients are all due at due.
func testMessage(id string, due time.Time, rcpts ...string) *Message {
	m := &Message{
		ID:      id,
		From:    "sender@example.org",
		Created: due.Add(-time.Minute),
		Meta:    map[string]string{"message-id": "<" + id + "@example.org>"},
	}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, Recipient{Rcpt: r, NextAttempt: due, Queued: m.Created})
	}
	return m
}

// testBody is n bytes of CRLF-terminated text that differ per seed.
func testBody(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, 0, n)
	for len(b) < n {
		line := make([]byte, 10+r.IntN(60))
		for i := range line {
			line[i] = byte('a' + r.IntN(26))
		}
		b = append(b, line...)
		b = append(b, "\r\n"...)
	}
	return b[:n]
}

func openT(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openKillable opens a store, and returns with it a kill that closes it
// the way a killed process leaves it: every file-system step fails from
// then on, so Close writes no checkpoint and the journal and queue/ stay
// as the last commit left them.
func openKillable(t testing.TB, dir string) (s *Store, kill func()) {
	t.Helper()
	var dead atomic.Bool
	s = openT(t, dir, Options{Fault: func(Op, string) error {
		if dead.Load() {
			return errInjected
		}
		return nil
	}})
	return s, func() { dead.Store(true); s.Close() }
}

func enqueueT(t testing.TB, s *Store, m *Message, body []byte) {
	t.Helper()
	if err := s.Enqueue(context.Background(), m, bytes.NewReader(body)); err != nil {
		t.Fatalf("Enqueue %s: %v", m.ID, err)
	}
}

func listT(t testing.TB, s *Store) []*Message {
	t.Helper()
	l, err := s.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return l
}

// holdsExactly fails t at once unless s lists exactly want (compared
// field by field, in List's order); what says when, as "after replay".
func holdsExactly(t testing.TB, what string, s *Store, want []*Message) {
	t.Helper()
	got := listT(t, s)
	if got == nil {
		got = []*Message{}
	}
	if want == nil {
		want = []*Message{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n%s\nwant\n%s", what, dump(got), dump(want))
	}
}

func ids(ms []*Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func bodyT(t testing.TB, s *Store, id string) []byte {
	t.Helper()
	f, err := s.Body(context.Background(), id)
	if err != nil {
		t.Fatalf("Body %s: %v", id, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// files lists the names in dir/sub, sorted.
func files(t testing.TB, dir, sub string) []string {
	t.Helper()
	d, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range d {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

// logRecorder is a slog.Handler keeping records, so tests can check that
// quarantines are logged.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func newLog() (*slog.Logger, *logRecorder) {
	r := &logRecorder{}
	return slog.New(r), r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// warned returns the "id" attribute of every record at level Warn or above
// whose message contains msg.
func (r *logRecorder) warned(msg string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		if rec.Level < slog.LevelWarn || !bytes.Contains([]byte(rec.Message), []byte(msg)) {
			continue
		}
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "id" {
				out = append(out, a.Value.String())
			}
			return true
		})
	}
	slices.Sort(out)
	return out
}
