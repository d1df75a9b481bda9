package spool

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
)

// TestJournalDiskFull fails the journal's steps with ENOSPC, the way a
// full disk fails them, for each kind of write: the call fails with an
// error wrapping ENOSPC, the store is unchanged, the failed round is cut
// off the journal (so a later Open cannot replay it), the next write
// succeeds, and the store reopens exactly as acknowledged. When the cut
// fails too, the journal moves on to a new generation and says at Error
// that the failed write may come back.
func TestJournalDiskFull(t *testing.T) {
	ctx := context.Background()
	writes := []struct {
		name string
		do   func(s *Store) error
		// applied is the store after the write, had it succeeded.
		applied func() []*Message
	}{
		{"enqueue", func(s *Store) error {
			return s.Enqueue(ctx, testMessage("new", t0, "c@example.com"), bytes.NewReader(testBody(2048, 9)))
		}, func() []*Message {
			return []*Message{clone(testMessage("m", t0, "a@example.com", "b@example.com")), clone(testMessage("new", t0, "c@example.com"))}
		}},
		{"enqueue large", func(s *Store) error {
			return s.Enqueue(ctx, testMessage("new", t0, "c@example.com"), bytes.NewReader(testBody(journalBodyMax+1, 9)))
		}, func() []*Message {
			return []*Message{clone(testMessage("m", t0, "a@example.com", "b@example.com")), clone(testMessage("new", t0, "c@example.com"))}
		}},
		{"update", func(s *Store) error { return s.Update(ctx, updated()) }, func() []*Message { return []*Message{updated()} }},
		{"delete", func(s *Store) error { return s.Update(ctx, &Message{ID: "m"}) }, func() []*Message { return []*Message{} }},
	}
	for _, w := range writes {
		for _, st := range []struct {
			name   string
			fail   map[Op]bool
			cutOff bool
		}{
			{"append", map[Op]bool{OpAppend: true}, true},
			{"sync", map[Op]bool{OpSync: true}, true},
			{"sync and cut", map[Op]bool{OpSync: true, OpTruncate: true}, false},
		} {
			t.Run(w.name+"/"+st.name, func(t *testing.T) {
				dir := t.TempDir()
				armed := false
				log, rec := newLog()
				s := openT(t, dir, Options{Logger: log, Fault: func(op Op, path string) error {
					if armed && st.fail[op] && filepath.Ext(path) == ".log" {
						return syscall.ENOSPC
					}
					return nil
				}})
				old := testMessage("m", t0, "a@example.com", "b@example.com")
				enqueueT(t, s, old, testBody(4096, 1))
				before := journalSize(t, dir)
				armed = true
				err := w.do(s)
				armed = false
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("%s = %v, want ENOSPC", w.name, err)
				}
				if got := listT(t, s); !reflect.DeepEqual(got, []*Message{clone(old)}) {
					t.Errorf("store changed by a failed %s: %s", w.name, dump(got))
				}
				if st.cutOff {
					if after := journalSize(t, dir); after != before {
						t.Errorf("journal holds %d bytes after the failed write, %d before", after, before)
					}
				} else if e := rec.levelled(slog.LevelError, "cannot cut"); len(e) == 0 {
					t.Error("a failed cut was not logged at Error")
				}
				// The disk has room again: the next write succeeds (into a new
				// generation when the cut failed).
				if err := w.do(s); err != nil {
					t.Fatalf("%s once there is room: %v", w.name, err)
				}
				if !st.cutOff && len(files(t, dir, journalSub)) < 2 {
					t.Errorf("journal/ = %v: no new generation after a failed cut", files(t, dir, journalSub))
				}
				want := w.applied()
				if got := listT(t, s); !reflect.DeepEqual(got, want) {
					t.Errorf("after the retry: %s", dump(got))
				}
				s.Close()
				if got := listT(t, openT(t, dir, Options{})); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("after reopen: %s\nwant %s", dump(got), dump(want))
				}
			})
		}
	}
}

func updated() *Message {
	m := testMessage("m", t0, "a@example.com", "b@example.com")
	m.Recipients = m.Recipients[1:]
	m.Recipients[0].Attempts = 1
	return clone(m)
}

// journalSize is the length of the journal's records: the files' sizes
// without the zeros preallocated after the last record.
func journalSize(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, name := range files(t, dir, journalSub) {
		b, err := os.ReadFile(filepath.Join(dir, journalSub, name))
		if err != nil {
			t.Fatal(err)
		}
		_, end, _ := parseSegment(b)
		n += end
	}
	return n
}
