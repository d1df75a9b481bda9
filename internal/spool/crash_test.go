package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// step names one file-system step of a write: the op and the kind of file
// (the extension of the path the hook sees: ".eml", ".json", ".log" for the
// journal, or "queue" for the queue directory). committed says the journal
// record is written by then: a crash there (the record in the page cache,
// which survives a killed process) leaves the new state for Open to
// replay, an error the store can clean up after leaves the old one.
type step struct {
	name      string
	op        Op
	file      string
	committed bool
}

func (st step) matches(op Op, path string) bool {
	if op != st.op {
		return false
	}
	if st.file == "queue" {
		return filepath.Base(path) == "queue"
	}
	return strings.Contains(filepath.Base(path), st.file)
}

// syncModes are the two ways the store shares its syncs: group commit of
// journal appends and directory fsyncs, and one per writer. Every step of
// the commit protocol is tested in both.
var syncModes = []struct {
	name string
	opts Options
}{{"group", Options{}}, {"nogroup", Options{NoGroupCommit: true}}}

// enqueueSteps are the steps of an Enqueue whose body goes into the
// journal (up to journalBodyMax). Its body and state files are written by
// a later checkpoint: those steps are in checkpointSteps.
var enqueueSteps = []step{
	{"reserve", OpReserve, reserveName, false},
	{"journal append", OpAppend, ".log", false},
	{"journal sync", OpSync, ".log", true},
}

// largeEnqueueSteps are those of a body over journalBodyMax: the body is
// made durable in its file, then the state is journaled.
var largeEnqueueSteps = []step{
	{"body create", OpCreate, ".eml", false},
	{"body write", OpWrite, ".eml", false},
	{"body fsync", OpSync, ".eml", false},
	{"body rename", OpRename, ".eml", false},
	{"dir fsync", OpSyncDir, "queue", false},
	{"journal append", OpAppend, ".log", false},
	{"journal sync", OpSync, ".log", true},
	{"state create", OpCreate, ".json", true},
	{"state write", OpWrite, ".json", true},
}

// injector fails a chosen step of the victim's write. In crash mode it also
// fails every step after it, cleanup included: from the disk's point of
// view that is a process killed right there.
type injector struct {
	mu      sync.Mutex
	armed   bool
	at      step
	crash   bool
	tripped bool
}

var errInjected = errors.New("injected fault")

func (in *injector) fault(op Op, path string) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.armed {
		return nil
	}
	if in.tripped && in.crash || !in.tripped && in.at.matches(op, path) {
		in.tripped = true
		return errInjected
	}
	return nil
}

func (in *injector) arm(at step, crash bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.armed, in.at, in.crash, in.tripped = true, at, crash, false
}

// reached reports whether the fault struck.
func (in *injector) reached() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.tripped
}

func (in *injector) disarm() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.armed = false
	return in.tripped
}

// TestEnqueueFaultAtEachStep fails each step of Enqueue in turn, once as an
// error the store can clean up after and once as a crash, for a body that
// goes into the journal and one that does not, and checks that Enqueue
// reports it and that the spool, reopened, holds the message whole or not
// at all (whole exactly when the crash came after its record was written),
// and never anything damaged.
func TestEnqueueFaultAtEachStep(t *testing.T) {
	ctx := context.Background()
	keepBody := testBody(2048, 1)
	paths := []struct {
		name  string
		body  []byte
		steps []step
	}{
		{"journaled", testBody(200<<10, 2), enqueueSteps},
		{"large", testBody(journalBodyMax+(100<<10), 2), largeEnqueueSteps}, // several writes
	}
	for _, path := range paths {
		victimBody := path.body
		for _, st := range path.steps {
			for _, crash := range []bool{false, true} {
				for _, mode := range syncModes {
					t.Run(fmt.Sprintf("%s/%s/crash=%v/%s", path.name, st.name, crash, mode.name), func(t *testing.T) {
						dir := t.TempDir()
						in := &injector{}
						log, rec := newLog()
						opts := mode.opts
						opts.Fault, opts.Logger = in.fault, log
						s := openT(t, dir, opts)
						keep := testMessage("keep", t0, "a@example.com")
						enqueueT(t, s, keep, keepBody)

						victim := testMessage("victim", t0, "b@example.com", "c@example.com")
						in.arm(st, crash)
						err := s.Enqueue(ctx, victim, bytes.NewReader(victimBody))
						if !in.reached() {
							t.Fatalf("the step was never reached")
						}
						if !errors.Is(err, errInjected) {
							t.Fatalf("Enqueue = %v, want the injected error", err)
						}
						if got := ids(listT(t, s)); !slices.Equal(got, []string{"keep"}) {
							t.Errorf("List after a failed Enqueue = %v", got)
						}
						if crash {
							// A crashed process does not checkpoint at Close.
							s.Close()
						}
						in.disarm()
						if !crash {
							// Cleaned up at once: nothing of the victim anywhere
							// (keep's files are written at Close).
							if got := files(t, dir, "queue"); len(got) != 0 {
								t.Errorf("queue/ = %v after cleanup", got)
							}
							if got := files(t, dir, "tmp"); len(got) != 0 {
								t.Errorf("tmp/ = %v after cleanup", got)
							}
							if w := rec.warned(""); len(w) != 0 {
								t.Errorf("warnings after a clean failure: %v", w)
							}
						}
						s.Close()

						s2 := openT(t, dir, Options{})
						got := listT(t, s2)
						wantVictim := crash && st.committed // written to the journal, only the fsync unknown
						switch {
						case wantVictim && len(got) == 2:
							if !reflect.DeepEqual(got[1], clone(victim)) || !bytes.Equal(bodyT(t, s2, "victim"), victimBody) {
								t.Errorf("victim loaded but not whole: %+v", got[1])
							}
						case !wantVictim && len(got) == 1:
						default:
							t.Fatalf("after reopen: %v (victim expected: %v)", ids(got), wantVictim)
						}
						if !reflect.DeepEqual(got[0], clone(keep)) {
							t.Errorf("keep changed: %+v", got[0])
						}
						if c := files(t, dir, "corrupt"); len(c) != 0 {
							t.Errorf("a crash left damaged entries: %v", c)
						}
						if tmp := files(t, dir, "tmp"); len(tmp) != 0 {
							t.Errorf("tmp/ not cleaned at Open: %v", tmp)
						}
						if q := files(t, dir, "queue"); len(q) != 2*len(got) {
							t.Errorf("queue/ = %v for %v", q, ids(got))
						}
						if j := files(t, dir, "journal"); len(j) != 1 {
							t.Errorf("journal/ = %v after a clean Open, want the one new generation", j)
						}
						if !crash {
							// The ID is free again.
							enqueueT(t, s2, victim, victimBody)
						}
					})
				}
			}
		}
	}
}

// updateSteps are those of an Update, then those of deleting a message
// (an Update without recipients). An Update's state file is written by a
// later checkpoint (checkpointSteps); a delete removes a state or body
// file only when one was written (the message was loaded by Open, or
// checkpointed).
var updateSteps = []step{
	{"journal append", OpAppend, ".log", false},
	{"journal sync", OpSync, ".log", true},
}

var deleteSteps = []step{
	{"delete append", OpAppend, ".log", false},
	{"delete sync", OpSync, ".log", true},
	{"delete state", OpRemove, ".json", true},
	{"delete body", OpRemove, ".eml", true},
}

// TestUpdateFaultAtEachStep does the same for Update and for deleting a
// message: Update fails exactly when the fault came before its commit, and
// after any crash or error the message is in its old state or its new one:
// the new one exactly when its record was written. Each case runs on a
// message just enqueued (its state only in the journal) and on one loaded
// by Open (its state in a file).
func TestUpdateFaultAtEachStep(t *testing.T) {
	ctx := context.Background()
	body := testBody(4096, 3)
	type tc struct {
		step
		del bool
	}
	var cases []tc
	for _, st := range updateSteps {
		cases = append(cases, tc{st, false})
	}
	for _, st := range deleteSteps {
		cases = append(cases, tc{st, true})
	}
	for _, c := range cases {
		st := c.step
		for _, crash := range []bool{false, true} {
			for _, mode := range syncModes {
				for _, reopened := range []bool{false, true} {
					if (st.file == ".json" || st.file == ".eml") && !reopened {
						continue // no file to remove: all of it is in the journal
					}
					t.Run(fmt.Sprintf("%s/crash=%v/%s/reopened=%v", st.name, crash, mode.name, reopened), func(t *testing.T) {
						dir := t.TempDir()
						in := &injector{}
						opts := mode.opts
						opts.Fault = in.fault
						s := openT(t, dir, opts)
						old := testMessage("m", t0, "a@example.com", "b@example.com")
						enqueueT(t, s, old, body)
						if reopened {
							s.Close()
							s = openT(t, dir, opts)
							if q := files(t, dir, "queue"); !slices.Equal(q, []string{"m.eml", "m.json"}) {
								t.Fatalf("queue/ = %v after reopening", q)
							}
						}
						leased, _ := s.Lease(ctx, t0, 1, time.Minute)
						upd := leased[0]
						if c.del {
							upd.Recipients = nil
						} else {
							upd.Recipients = upd.Recipients[1:]
							upd.Recipients[0].Attempts = 1
						}
						in.arm(st, crash)
						err := s.Update(ctx, upd)
						if !in.reached() {
							t.Fatal("the step was never reached")
						}
						// Once the record is committed, the change is made: a
						// file step after it is repaired from the journal.
						if wantErr := !st.committed || st.op == OpSync; wantErr != (err != nil) {
							t.Errorf("Update = %v, want an error: %v", err, wantErr)
						}
						if err != nil {
							// Nothing changed, the lease included: the holder may
							// try again.
							if got := listT(t, s); !reflect.DeepEqual(got, []*Message{clone(old)}) {
								t.Errorf("after a failed Update: %s", dump(got))
							}
						}
						if crash {
							s.Close() // a crashed process does not checkpoint
						}
						in.disarm()
						s.Close()

						got := listT(t, openT(t, dir, Options{}))
						oldState, newState := []*Message{clone(old)}, []*Message{clone(upd)}
						newState[0].Lease = 0
						if len(upd.Recipients) == 0 {
							newState = []*Message{}
						}
						want := oldState
						if st.committed && (crash || err == nil) {
							want = newState
						}
						if !reflect.DeepEqual(got, want) {
							t.Errorf("after reopen: %s\nwant %s", dump(got), dump(want))
						}
						if c := files(t, dir, "corrupt"); len(c) != 0 {
							t.Errorf("damaged entries: %v", c)
						}
						if q := files(t, dir, "queue"); len(q) != 2*len(got) {
							t.Errorf("queue/ = %v for %v", q, ids(got))
						}
					})
				}
			}
		}
	}
}

// TestInjectedWriteError fails a write with ENOSPC partway through a body
// and in a state, the way a full disk does: the error wraps ENOSPC and
// nothing is left behind.
func TestInjectedWriteError(t *testing.T) {
	ctx := context.Background()
	for _, kind := range []string{".eml", ".json"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			writes := 0
			s := openT(t, dir, Options{Fault: func(op Op, path string) error {
				if op == OpWrite && strings.Contains(path, kind) {
					if writes++; writes == 3 || kind == ".json" {
						return syscall.ENOSPC
					}
				}
				return nil
			}})
			err := s.Enqueue(ctx, testMessage("m", t0, "a@example.com"), bytes.NewReader(testBody(1<<20, 4)))
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Enqueue = %v, want ENOSPC", err)
			}
			for _, sub := range []string{"queue", "tmp"} {
				if f := files(t, dir, sub); len(f) != 0 {
					t.Errorf("%s/ = %v after a failed Enqueue", sub, f)
				}
			}
		})
	}
}
