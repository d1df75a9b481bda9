package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// checkpointNow runs a checkpoint of everything committed so far, the
// way a full generation starts one, and returns its error.
func checkpointNow(s *Store) error {
	waitCheckpoint(s)
	s.j.mu.Lock()
	s.j.cpRunning = true
	s.j.cpDone = make(chan struct{})
	s.j.mu.Unlock()
	s.j.runCheckpoint()
	s.j.mu.Lock()
	defer s.j.mu.Unlock()
	return s.j.lastCPErr
}

// countExt counts the names in names ending in ext.
func countExt(names []string, ext string) int {
	n := 0
	for _, name := range names {
		if strings.HasSuffix(name, ext) {
			n++
		}
	}
	return n
}

// TestStateFilesLazy counts the files of the queue directory: an Enqueue
// (and an Update) of a journaled message creates no file, the checkpoint
// at Close writes one body and one state per message, and deletes leave
// nothing, whether or not a checkpoint wrote the files. It also checks
// that the reserve for the unwritten files is held and given back exactly.
func TestStateFilesLazy(t *testing.T) {
	const n = 40
	ctx := context.Background()
	for _, checkpointed := range []bool{false, true} {
		t.Run(fmt.Sprintf("checkpointed=%v", checkpointed), func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{})
			for i := range n {
				enqueueT(t, s, testMessage(fmt.Sprintf("m%03d", i), t0, "a@example.com", "b@example.com"), testBody(2048, uint64(i)))
			}
			leased, err := s.Lease(ctx, t0, n/2, time.Minute)
			if err != nil || len(leased) != n/2 {
				t.Fatalf("Lease = %d, %v", len(leased), err)
			}
			for _, m := range leased {
				m.Recipients = m.Recipients[1:]
				if err := s.Update(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			q := files(t, dir, queueSub)
			if len(q) != 0 {
				t.Fatalf("before a checkpoint queue/ = %v, want nothing", q)
			}
			if got, want := s.res.need, int64(n*2*stateBlock); got != want {
				t.Errorf("reserve need = %d, want %d (a block per unwritten state and per unwritten 2 KiB body)", got, want)
			}
			want := listT(t, s)
			if checkpointed {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				q = files(t, dir, queueSub)
				if len(q) != 2*n || countExt(q, extState) != n || countExt(q, extBody) != n {
					t.Fatalf("after Close queue/ holds %d files (%d states, %d bodies), want %d, %d and %d",
						len(q), countExt(q, extState), countExt(q, extBody), 2*n, n, n)
				}
				s = openT(t, dir, Options{})
				if got := listT(t, s); !reflect.DeepEqual(got, want) {
					t.Fatalf("reopened:\n%s\nwant\n%s", dump(got), dump(want))
				}
			}
			for _, m := range want {
				if err := s.Update(ctx, &Message{ID: m.ID}); err != nil {
					t.Fatal(err)
				}
			}
			if q := files(t, dir, queueSub); len(q) != 0 {
				t.Errorf("after %d deletes queue/ = %v", n, q)
			}
			if s.res.need != 0 || len(s.unwritten) != 0 {
				t.Errorf("after the deletes: reserve need %d, %d unwritten states", s.res.need, len(s.unwritten))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if q := files(t, dir, queueSub); len(q) != 0 {
				t.Errorf("after Close queue/ = %v", q)
			}
		})
	}
}

// TestCheckpointStateFault fails the checkpoint's write of one message's
// body file or state file (its creation or its write, with EIO or
// ENOSPC): the checkpoint fails and says so at Error, every generation
// stays (a live message depends on it), the other files are written, and
// the store goes on working, every body readable. Then either the next
// checkpoint writes the files and drops the generations, or the process
// dies (every later step fails) and Open restores every acknowledged
// state and body from the journal.
func TestCheckpointStateFault(t *testing.T) {
	for _, ext := range []string{extBody, extState} {
		for _, op := range []Op{OpCreate, OpWrite} {
			for _, errno := range []error{syscall.EIO, syscall.ENOSPC} {
				for _, then := range []string{"recovers", "dies"} {
					t.Run(fmt.Sprintf("%s/%s/%v/%s", ext, op, errno, then), func(t *testing.T) {
						checkpointFileFault(t, ext, op, errno, then)
					})
				}
			}
		}
	}
}

// checkpointFileFault is one case of TestCheckpointStateFault.
func checkpointFileFault(t *testing.T, ext string, op Op, errno error, then string) {
	ctx := context.Background()
	dir := t.TempDir()
	var mu sync.Mutex
	failing, dead := false, false
	log, rec := newLog()
	s := openT(t, dir, Options{Logger: log, Fault: func(o Op, path string) error {
		mu.Lock()
		defer mu.Unlock()
		if dead || failing && o == op && filepath.Base(path) == "m1"+ext {
			return errno
		}
		return nil
	}})
	body := testBody(2048, 1)
	var want []*Message
	for i := range 4 {
		m := testMessage(fmt.Sprintf("m%d", i), t0, "a@example.com", "b@example.com")
		enqueueT(t, s, m, body)
		want = append(want, clone(m))
	}
	leased, _ := s.Lease(ctx, t0, 2, time.Minute) // m0 and m1
	for _, m := range leased {
		m.Recipients = m.Recipients[1:]
		m.Recipients[0].Attempts = 1
		if err := s.Update(ctx, m); err != nil {
			t.Fatal(err)
		}
		m.Lease = 0
		want[slices.IndexFunc(want, func(w *Message) bool { return w.ID == m.ID })] = m
	}

	mu.Lock()
	failing = true
	mu.Unlock()
	err := checkpointNow(s)
	if !errors.Is(err, errno) {
		t.Fatalf("checkpoint = %v, want %v", err, errno)
	}
	if got := rec.levelled(slog.LevelError, "checkpoint"); len(got) == 0 {
		t.Error("the failed checkpoint was not logged at Error")
	}
	if segs := files(t, dir, journalSub); len(segs) != 2 {
		t.Errorf("journal/ = %v: the generation a live message depends on was dropped", segs)
	}
	q := files(t, dir, queueSub)
	for _, id := range []string{"m0", "m2", "m3"} {
		if !slices.Contains(q, id+extState) || !slices.Contains(q, id+extBody) {
			t.Errorf("queue/ = %v: no state or body for %s", q, id)
		}
	}
	// The body goes first: a message whose body could not be
	// written gets no state either.
	if (op == OpCreate || ext == extBody) && slices.Contains(q, "m1"+extState) {
		t.Errorf("queue/ = %v: m1's state was written after all", q)
	}
	if op == OpCreate && ext == extBody && slices.Contains(q, "m1"+extBody) {
		t.Errorf("queue/ = %v: m1's body was written after all", q)
	}
	// The store goes on: a new message, and every body.
	m4 := testMessage("m4", t0, "a@example.com")
	enqueueT(t, s, m4, body)
	want = append(want, clone(m4))
	if got := listT(t, s); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the failed checkpoint:\n%s\nwant\n%s", dump(got), dump(want))
	}
	for _, m := range want {
		if !slices.Equal(bodyT(t, s, m.ID), body) {
			t.Errorf("body of %s differs after the failed checkpoint", m.ID)
		}
	}

	mu.Lock()
	failing = false
	dead = then == "dies"
	mu.Unlock()
	if then == "recovers" {
		if err := checkpointNow(s); err != nil {
			t.Fatalf("the next checkpoint: %v", err)
		}
		if segs := files(t, dir, journalSub); len(segs) != 1 {
			t.Errorf("journal/ = %v after the next checkpoint, want the current generation only", segs)
		}
		if q := files(t, dir, queueSub); countExt(q, extState) != len(want) || countExt(q, extBody) != len(want) {
			t.Errorf("queue/ = %v after the next checkpoint", q)
		}
	}
	s.Close()
	s2 := openT(t, dir, Options{})
	if got := listT(t, s2); !reflect.DeepEqual(got, want) {
		t.Fatalf("reopened:\n%s\nwant\n%s", dump(got), dump(want))
	}
	for _, m := range want {
		if !slices.Equal(bodyT(t, s2, m.ID), body) {
			t.Errorf("body of %s differs after reopening", m.ID)
		}
	}
	if c := files(t, dir, corruptSub); len(c) != 0 {
		t.Errorf("corrupt/ = %v", c)
	}
}

// TestQuarantineUnwrittenState quarantines messages whose latest state
// was never written: corrupt/ must hold the state, written from memory,
// beside the body, and an older state file in queue/ must go.
func TestQuarantineUnwrittenState(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	body := testBody(2048, 5)
	enqueueT(t, s, testMessage("old", t0, "a@example.com", "b@example.com"), body)
	s.Close()
	s = openT(t, dir, Options{}) // old's state is in a file now
	fresh := testMessage("fresh", t0, "a@example.com")
	enqueueT(t, s, fresh, body)
	leased, _ := s.Lease(ctx, t0, 10, time.Minute)
	var updated *Message
	for _, m := range leased {
		if m.ID == "old" {
			m.Recipients = m.Recipients[1:]
			if err := s.Update(ctx, m); err != nil {
				t.Fatal(err)
			}
			updated = clone(m)
			updated.Lease = 0
		}
	}
	for _, id := range []string{"fresh", "old"} {
		if err := s.Quarantine(id, 0, errors.New("test")); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := files(t, dir, corruptSub), []string{"fresh.eml", "fresh.json", "old.eml", "old.json"}; !slices.Equal(got, want) {
		t.Fatalf("corrupt/ = %v, want %v", got, want)
	}
	if q := files(t, dir, queueSub); len(q) != 0 {
		t.Errorf("queue/ = %v after the quarantines", q)
	}
	for id, want := range map[string]*Message{"fresh": clone(fresh), "old": updated} {
		data, err := os.ReadFile(filepath.Join(dir, corruptSub, id+extState))
		if err != nil {
			t.Fatal(err)
		}
		m, info, err := decodeState(data)
		if err != nil || !reflect.DeepEqual(m, want) || info.size != int64(len(body)) {
			t.Errorf("corrupt/%s.json = %s (%d octets, %v), want %s", id, dump([]*Message{m}), info.size, err, dump([]*Message{want}))
		}
	}
	s.Close()
	if got := listT(t, openT(t, dir, Options{})); len(got) != 0 {
		t.Errorf("quarantined messages came back: %v", ids(got))
	}
}

// TestOpenKeepsJournalOnlyBody kills a process whose message's body and
// state were only in the journal, then opens the spool with the replay's
// writing of that state failing (the body file is written): the body must
// not be taken for an orphan and removed, and the next Open loads the
// message whole.
func TestOpenKeepsJournalOnlyBody(t *testing.T) {
	dir := t.TempDir()
	s, kill := openKillable(t, dir)
	m := testMessage("m", t0, "a@example.com")
	body := testBody(3000, 9)
	enqueueT(t, s, m, body)
	kill() // no checkpoint
	if q := files(t, dir, queueSub); len(q) != 0 {
		t.Fatalf("queue/ = %v, want nothing: body and state only in the journal", q)
	}

	log, rec := newLog()
	s2 := openT(t, dir, Options{Logger: log, Fault: func(op Op, path string) error {
		if op == OpRename && filepath.Base(path) == "m"+extState {
			return syscall.EIO
		}
		return nil
	}})
	if got := listT(t, s2); len(got) != 0 {
		t.Errorf("loaded %v without a state file", ids(got))
	}
	if q := files(t, dir, queueSub); !slices.Contains(q, "m.eml") {
		t.Fatalf("queue/ = %v: the body of a message the journal holds was removed", q)
	}
	if got := rec.levelled(slog.LevelError, "only in the journal"); len(got) == 0 {
		t.Error("the kept body was not logged at Error")
	}
	s2.Close()

	s3 := openT(t, dir, Options{})
	if got := listT(t, s3); !reflect.DeepEqual(got, []*Message{clone(m)}) {
		t.Fatalf("after the next Open: %s", dump(got))
	}
	if got := bodyT(t, s3, "m"); !slices.Equal(got, body) {
		t.Error("body differs")
	}
}
