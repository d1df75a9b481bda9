package mailroute

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// A runner's cut-off context is reused while its deadline is within
// budget/cutoffSlack before the one asked for and never after it, and
// replaced otherwise: an earlier lease (deadline after the one wanted),
// time gone by, or the context ended.
func TestCutoffsReuse(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()
	c := &cutoffs{parent: parent}
	defer c.stop()
	const budget = 64 * time.Minute // slack: a minute
	base := time.Now().Add(time.Hour)

	ctx1, at1 := c.context(base, budget)
	if !at1.Equal(base) {
		t.Fatalf("deadline %v, want %v", at1, base)
	}
	if dl, ok := ctx1.Deadline(); !ok || !dl.Equal(base) {
		t.Fatalf("context deadline %v %v, want %v", dl, ok, base)
	}
	for _, tc := range []struct {
		name  string
		want  time.Time
		reuse bool
	}{
		{"same deadline", base, true},
		{"59 s later", base.Add(59 * time.Second), true},
		{"a minute later: the edge", base.Add(time.Minute), true},
		{"61 s later: too early a cut-off", base.Add(61 * time.Second), false},
		{"earlier: would run past the lease", base.Add(-time.Second), false},
	} {
		c := &cutoffs{parent: parent}
		first, _ := c.context(base, budget)
		ctx, at := c.context(tc.want, budget)
		if got := ctx == first; got != tc.reuse {
			t.Errorf("%s: reused %v, want %v", tc.name, got, tc.reuse)
		}
		if at.After(tc.want) {
			t.Errorf("%s: deadline %v after the one wanted, %v", tc.name, at, tc.want)
		}
		if tc.reuse {
			if first.Err() != nil {
				t.Errorf("%s: the reused context ended: %v", tc.name, first.Err())
			}
		} else if first.Err() == nil {
			t.Errorf("%s: the replaced context was not ended (its timer kept)", tc.name)
		}
		c.stop()
	}

	// A context that ended (its deadline passed) is replaced, and its
	// cause says why.
	short := &cutoffs{parent: parent}
	ctx, _ := short.context(time.Now().Add(time.Millisecond), budget)
	<-ctx.Done()
	if cause := context.Cause(ctx); !errors.Is(cause, errAttemptCutOff) {
		t.Errorf("cause %v, want errAttemptCutOff", cause)
	}
	next, _ := short.context(time.Now().Add(time.Hour), budget)
	if next == ctx || next.Err() != nil {
		t.Errorf("an ended context was handed out again (%v)", next.Err())
	}
	short.stop()
	if next.Err() == nil {
		t.Error("stop left the context running")
	}
}

// cutCtx, the engine's Watcher: every abort registered when the context
// ends is called, none that was unregistered, and one registered after
// the end at once; slots are reused.
func TestCutCtxWatch(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	c := &cutoffs{parent: parent}
	ctx, _ := c.context(time.Now().Add(time.Hour), time.Hour)
	w := ctx.(*cutCtx)
	var a, b, late atomic.Int32
	ta := w.Watch(func() { a.Add(1) })
	tb := w.Watch(func() { b.Add(1) })
	w.Unwatch(tb)
	if tb2 := w.Watch(func() { b.Add(1) }); tb2 != tb {
		t.Errorf("token %d, want the freed slot %d", tb2, tb)
	} else {
		w.Unwatch(tb2)
	}
	cancel() // the parent ends (Shutdown): so does the attempt's context
	<-ctx.Done()
	deadline := time.Now().Add(10 * time.Second)
	for a.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // fire runs in AfterFunc's goroutine
	}
	if a.Load() != 1 || b.Load() != 0 {
		t.Errorf("aborts called: registered %d, unregistered %d; want 1, 0", a.Load(), b.Load())
	}
	w.Unwatch(ta)
	if tok := w.Watch(func() { late.Add(1) }); tok != -1 || late.Load() != 1 {
		t.Errorf("a Watch after the end: token %d, abort called %d times; want -1, 1", tok, late.Load())
	}
	w.Unwatch(-1)
	c.stop()
}
