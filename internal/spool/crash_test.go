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
// (the extension of the path the hook sees, or the queue directory).
type step struct {
	name string
	op   Op
	file string // ".eml", ".json" or "queue"
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

// syncModes are the two ways the store makes renames durable: directory
// fsyncs shared by group commit, and one per writer. Every step of the
// commit protocol is tested in both.
var syncModes = []struct {
	name string
	opts Options
}{{"group", Options{}}, {"nogroup", Options{NoGroupCommit: true}}}

var enqueueSteps = []step{
	{"body create", OpCreate, ".eml"},
	{"body write", OpWrite, ".eml"},
	{"body fsync", OpSync, ".eml"},
	{"body rename", OpRename, ".eml"},
	{"state create", OpCreate, ".json"},
	{"state write", OpWrite, ".json"},
	{"state fsync", OpSync, ".json"},
	{"state rename", OpRename, ".json"},
	{"dir fsync", OpSyncDir, "queue"},
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

func (in *injector) disarm() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.armed = false
	return in.tripped
}

// TestEnqueueFaultAtEachStep fails each step of Enqueue in turn, once as an
// error the store can clean up after and once as a crash, and checks that
// Enqueue reports it and that the spool, reopened, holds the message whole
// or not at all, and never anything damaged.
func TestEnqueueFaultAtEachStep(t *testing.T) {
	ctx := context.Background()
	keepBody, victimBody := testBody(2048, 1), testBody(200<<10, 2) // the victim's body takes several writes
	for _, st := range enqueueSteps {
		for _, crash := range []bool{false, true} {
			for _, mode := range syncModes {
				t.Run(fmt.Sprintf("%s/crash=%v/%s", st.name, crash, mode.name), func(t *testing.T) {
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
					if !in.disarm() {
						t.Fatalf("the step was never reached")
					}
					if !errors.Is(err, errInjected) {
						t.Fatalf("Enqueue = %v, want the injected error", err)
					}
					if got := ids(listT(t, s)); !slices.Equal(got, []string{"keep"}) {
						t.Errorf("List after a failed Enqueue = %v", got)
					}
					if !crash {
						// Cleaned up at once: nothing of the victim anywhere.
						if got := files(t, dir, "queue"); !slices.Equal(got, []string{"keep.eml", "keep.json"}) {
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
					wantVictim := crash && st.op == OpSyncDir // renamed, only durability unknown
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
					if !crash {
						// The ID is free again.
						enqueueT(t, s2, victim, victimBody)
					}
				})
			}
		}
	}
}

var updateSteps = []step{
	{"state create", OpCreate, ".json"},
	{"state write", OpWrite, ".json"},
	{"state fsync", OpSync, ".json"},
	{"state rename", OpRename, ".json"},
	{"dir fsync", OpSyncDir, "queue"},
}

// TestUpdateFaultAtEachStep does the same for Update and for deleting a
// message: after any crash the message is in its old state or its new one.
func TestUpdateFaultAtEachStep(t *testing.T) {
	ctx := context.Background()
	body := testBody(4096, 3)
	steps := append(slices.Clone(updateSteps),
		step{"delete state", OpRemove, ".json"},
		step{"delete body", OpRemove, ".eml"},
		step{"delete dir fsync", OpSyncDir, "queue"})
	for _, st := range steps {
		for _, crash := range []bool{false, true} {
			for _, mode := range syncModes {
				t.Run(fmt.Sprintf("%s/crash=%v/%s", st.name, crash, mode.name), func(t *testing.T) {
					dir := t.TempDir()
					in := &injector{}
					opts := mode.opts
					opts.Fault = in.fault
					s := openT(t, dir, opts)
					old := testMessage("m", t0, "a@example.com", "b@example.com")
					enqueueT(t, s, old, body)
					leased, _ := s.Lease(ctx, t0, 1, time.Minute)
					upd := leased[0]
					if st.op == OpRemove || st.name == "delete dir fsync" {
						upd.Recipients = nil
					} else {
						upd.Recipients = upd.Recipients[1:]
						upd.Recipients[0].Attempts = 1
					}
					in.arm(st, crash)
					err := s.Update(ctx, upd)
					if !in.disarm() {
						t.Fatal("the step was never reached")
					}
					// Removing the body after the state is gone is not an error:
					// the message no longer exists and Open removes the orphan.
					if bodyOnly := st.name == "delete body" && !crash; bodyOnly != (err == nil) {
						t.Errorf("Update = %v", err)
					}
					s.Close()

					got := listT(t, openT(t, dir, Options{}))
					oldState, newState := []*Message{clone(old)}, []*Message{clone(upd)}
					newState[0].Lease = 0
					if len(upd.Recipients) == 0 {
						newState = []*Message{}
					}
					if !reflect.DeepEqual(got, oldState) && !reflect.DeepEqual(got, newState) {
						t.Errorf("after reopen: %s\nwant old %s or new %s", dump(got), dump(oldState), dump(newState))
					}
					if c := files(t, dir, "corrupt"); len(c) != 0 {
						t.Errorf("damaged entries: %v", c)
					}
				})
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
