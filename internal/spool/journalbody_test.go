package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestJournalBody enqueues bodies of every size the journal holds, the
// empty one and journalBodyMax included: no file is written, Body returns
// each byte for byte from the journal, and after Close (whose checkpoint
// writes the files) and a reopen, from the files.
func TestJournalBody(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	bodies := map[string][]byte{}
	for i, size := range []int{0, 1, 2048, 64 << 10, journalBodyMax} {
		id := fmt.Sprintf("m%d", i)
		bodies[id] = testBody(size, uint64(i))
		enqueueT(t, s, testMessage(id, t0, "a@example.com"), bodies[id])
	}
	if q := files(t, dir, queueSub); len(q) != 0 {
		t.Fatalf("queue/ = %v, want nothing before a checkpoint", q)
	}
	for id, want := range bodies {
		if e := s.entries[id]; e.jbody == nil || e.bodyFile {
			t.Errorf("%s: the store does not read its body from the journal", id)
		}
		for range 2 { // read twice: the journal is read, not consumed
			if got := bodyT(t, s, id); !bytes.Equal(got, want) {
				t.Errorf("Body(%s) = %d octets, not the %d enqueued", id, len(got), len(want))
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if q := files(t, dir, queueSub); countExt(q, extBody) != len(bodies) || countExt(q, extState) != len(bodies) {
		t.Fatalf("queue/ after Close = %v", q)
	}
	s2 := openT(t, dir, Options{})
	for id, want := range bodies {
		if got := bodyT(t, s2, id); !bytes.Equal(got, want) {
			t.Errorf("after reopen Body(%s) = %d octets, not the %d enqueued", id, len(got), len(want))
		}
		if b, err := os.ReadFile(filepath.Join(dir, queueSub, id+extBody)); err != nil || !bytes.Equal(b, want) {
			t.Errorf("queue/%s%s = %d octets (%v), want the %d enqueued", id, extBody, len(b), err, len(want))
		}
	}
}

// TestBodyAcrossCheckpoint reads bodies while checkpoints move them from
// the journal to their files and drop the generations they were in, and
// while other messages are enqueued and deleted: every read returns the
// body byte for byte, none fails (a read never meets a closed segment),
// and afterwards every body is read from its file and the dropped
// generations' descriptors are closed. Run it with -race.
func TestBodyAcrossCheckpoint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	const n = 40
	bodies := map[string][]byte{}
	for i := range n {
		id := fmt.Sprintf("m%02d", i)
		bodies[id] = testBody(1000+i*97, uint64(i))
		enqueueT(t, s, testMessage(id, t0, "a@example.com"), bodies[id])
	}
	s.j.mu.Lock()
	first := s.j.seg
	s.j.mu.Unlock()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	reads := make([]int, 4)
	for r := range reads {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("m%02d", (i*7+r)%n)
				rc, err := s.Body(ctx, id)
				if err != nil {
					t.Errorf("Body(%s) during checkpoints: %v", id, err)
					return
				}
				var b bytes.Buffer
				b.ReadFrom(rc)
				rc.Close()
				if !bytes.Equal(b.Bytes(), bodies[id]) {
					t.Errorf("Body(%s) during checkpoints: %d octets differ from the %d enqueued", id, b.Len(), len(bodies[id]))
					return
				}
				reads[r]++
			}
		})
	}
	// Writers: messages that come and go while the checkpoints run.
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("churn%d", i)
			if err := s.Enqueue(ctx, testMessage(id, t0.Add(time.Hour), "b@example.com"), bytes.NewReader(testBody(3000, uint64(i)))); err != nil {
				t.Error(err)
				return
			}
			if err := s.Update(ctx, &Message{ID: id}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 5 {
		if err := checkpointNow(s); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("reads during the checkpoints: %v", reads)

	first.rmu.RLock()
	closed := first.f == nil
	first.rmu.RUnlock()
	if !closed {
		t.Error("the dropped generation's descriptor is still open")
	}
	for id, want := range bodies {
		if e := s.entries[id]; e.jbody != nil || !e.bodyFile {
			t.Errorf("%s: body still read from the journal after the checkpoints", id)
		}
		if got := bodyT(t, s, id); !bytes.Equal(got, want) {
			t.Errorf("Body(%s) after the checkpoints differs", id)
		}
	}
	if q := files(t, dir, queueSub); countExt(q, extBody) != n || countExt(q, extState) != n {
		t.Errorf("queue/ = %v, want a body and a state for each of the %d messages (the deleted ones gone)", q, n)
	}
}

// TestJournalBodyQuarantine flips a byte inside a body only the journal
// holds, between two other messages' records in the same generation: Body
// refuses it with ErrCorrupt, the damaged bytes and the state go to
// corrupt/, the other messages are untouched, and the damaged generation
// is checkpointed away at once (rather than left for Open's replay to skip
// the damaged record after a crash). Neither a reopen after Close nor
// one after a kill brings the message back or loses another.
func TestJournalBodyQuarantine(t *testing.T) {
	for _, killed := range []bool{false, true} {
		t.Run(fmt.Sprintf("killed=%v", killed), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s, kill := openKillable(t, dir)
			bodies := map[string][]byte{"before": testBody(3000, 1), "after": testBody(3000, 2)}
			enqueueT(t, s, testMessage("before", t0, "a@example.com"), bodies["before"])
			enqueueT(t, s, testMessage("m", t0, "a@example.com"), testBody(3000, 3))
			enqueueT(t, s, testMessage("after", t0, "a@example.com"), bodies["after"])
			s.j.mu.Lock()
			damagedGen := segName(s.j.seg.gen)
			s.j.mu.Unlock()
			damaged := damageJournalBody(t, s, "m", func(b []byte) []byte { b[100] ^= 1; return b })
			if _, err := s.Body(ctx, "m"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Body of a damaged journal body = %v, want ErrCorrupt", err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, corruptSub, "m"+extBody)); !bytes.Equal(got, damaged) {
				t.Errorf("corrupt/m.eml is not the journal's damaged bytes")
			}
			waitCheckpoint(s)
			if j := files(t, dir, journalSub); slices.Contains(j, damagedGen) {
				t.Errorf("journal/ = %v: the damaged generation %s was not checkpointed away", j, damagedGen)
			}
			for id, want := range bodies {
				if !bytes.Equal(bodyT(t, s, id), want) {
					t.Errorf("Body(%s) differs", id)
				}
			}
			if killed {
				kill() // no checkpoint
			} else {
				s.Close()
			}
			log, rec := newLog()
			s2 := openT(t, dir, Options{Logger: log})
			if got := ids(listT(t, s2)); !slices.Equal(got, []string{"after", "before"}) {
				t.Fatalf("after reopening: %v, want after and before", got)
			}
			for id, want := range bodies {
				if !bytes.Equal(bodyT(t, s2, id), want) {
					t.Errorf("Body(%s) differs after reopening", id)
				}
			}
			if w := rec.levelled(slog.LevelWarn, "damaged journal"); len(w) != 0 {
				t.Errorf("the damaged generation was replayed: %v", w)
			}
		})
	}
}

// TestJournalBodyFileSteps counts the file-system steps of a journaled
// message's life before a checkpoint, enqueued, read, updated and
// delivered, one call at a time: exactly one reserve, append and
// fdatasync per change, and not one file created, written, renamed,
// removed or directory synced.
func TestJournalBodyFileSteps(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	steps := map[Op]int{}
	s := openT(t, t.TempDir(), Options{Fault: func(op Op, path string) error {
		mu.Lock()
		defer mu.Unlock()
		steps[op]++
		return nil
	}})
	mu.Lock()
	clear(steps) // what Open did
	mu.Unlock()
	const n = 10
	for i := range n {
		id := fmt.Sprintf("m%d", i)
		body := testBody(2048, uint64(i))
		enqueueT(t, s, testMessage(id, t0, "a@example.com", "b@example.com"), body)
		if !bytes.Equal(bodyT(t, s, id), body) {
			t.Fatalf("Body(%s) differs", id)
		}
		u := clone(testMessage(id, t0, "b@example.com"))
		if err := s.Update(ctx, u); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(ctx, &Message{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	got := maps.Clone(steps)
	mu.Unlock()
	want := map[Op]int{OpReserve: n, OpAppend: 3 * n, OpSync: 3 * n}
	if !maps.Equal(got, want) {
		t.Errorf("file-system steps of %d messages enqueued, read, updated and deleted: %v, want %v", n, got, want)
	}
	if s.res.need != 0 {
		t.Errorf("reserve need %d after every message was deleted", s.res.need)
	}
}
