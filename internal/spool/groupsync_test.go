package spool

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestGroupSync checks the group-commit promise: every caller returns only
// after an fsync that started after it called, with that fsync's result,
// and concurrent callers share fsyncs.
func TestGroupSync(t *testing.T) {
	g := newGroupSync()
	var (
		renamed atomic.Int64 // "renames" so far; a caller's number is its ticket
		covered atomic.Int64 // renames covered by the last completed fsync
		syncs   atomic.Int64
		running atomic.Int32
	)
	errOdd := errors.New("odd fsync failed")
	fsync := func() error {
		if running.Add(1) != 1 {
			t.Error("two fsyncs at once")
		}
		n := syncs.Add(1)
		snap := renamed.Load()
		time.Sleep(time.Millisecond) // a journal commit takes a while
		covered.Store(snap)
		running.Add(-1)
		if n%2 == 1 {
			return errOdd
		}
		return nil
	}
	const callers = 200
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range callers {
		wg.Go(func() {
			ticket := renamed.Add(1)
			err := g.do(fsync)
			if covered.Load() < ticket {
				t.Errorf("returned after an fsync that began before its rename (%d < %d)", covered.Load(), ticket)
			}
			if err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	n := syncs.Load()
	t.Logf("%d callers, %d fsyncs, %d callers saw a failed one", callers, n, failed.Load())
	if n >= callers {
		t.Errorf("%d fsyncs for %d concurrent callers: nothing shared", n, callers)
	}
	if failed.Load() == 0 {
		t.Error("no caller got the failing fsyncs' error")
	}
}
