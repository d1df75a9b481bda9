package mailroute

import (
	"context"
	"testing"
	"time"
)

// The engine's abort is bound to the caller's context through one
// registration shared by the Sends that pass that context: a later Send
// with the same context reuses it, its cancellation aborts exactly the
// operations bound at the time (and any bound after), a registration
// replaced by another context's still serves the operations it holds, and
// an operation unbound is never aborted.
func TestCtxWatchShared(t *testing.T) {
	var f inflight
	f.init()
	aborted := func() (func(), <-chan struct{}) {
		ch := make(chan struct{}, 4)
		return func() { ch <- struct{}{} }, ch
	}
	wantAbort := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not aborted", what)
		}
	}
	noAbort := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
			t.Fatalf("%s: aborted", what)
		case <-time.After(20 * time.Millisecond):
		}
	}

	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	// A finished Send leaves the registration for the next with ctxA.
	s1 := f.enter(ctxA, new(sendCtx))
	ab1, ch1 := aborted()
	s1.Unwatch(s1.Watch(ab1))
	f.leave(s1)
	s2 := f.enter(ctxA, new(sendCtx))
	if s2.cw == nil || s2.cw != s1.cw {
		t.Fatalf("the second Send with the same context registered again (%p, %p)", s1.cw, s2.cw)
	}
	// Another context takes the cache while s2's operation is bound: the
	// old registration still aborts it.
	ab2, ch2 := aborted()
	tok2 := s2.Watch(ab2)
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	s3 := f.enter(ctxB, new(sendCtx))
	if s3.cw == s2.cw {
		t.Fatal("a different context shares the registration")
	}
	ab3, ch3 := aborted()
	tok3 := s3.Watch(ab3)
	cancelA()
	wantAbort(ch2, "the operation bound to the cancelled context")
	noAbort(ch3, "the operation bound to another context")
	noAbort(ch1, "an operation unbound before the cancellation")
	// Bound after the context ended: aborted at once.
	s2.Unwatch(tok2)
	ab4, ch4 := aborted()
	s2.Unwatch(s2.Watch(ab4))
	wantAbort(ch4, "an operation bound to a context already done")
	f.leave(s2)
	// Unbound, then the context ends: nothing.
	s3.Unwatch(tok3)
	cancelB()
	noAbort(ch3, "an operation unbound before its context ended")
	f.leave(s3)

	// A context with the same Done (a value added to it) is the same.
	ctxC, cancelC := context.WithCancel(context.Background())
	defer cancelC()
	s4 := f.enter(ctxC, new(sendCtx))
	f.leave(s4)
	s5 := f.enter(context.WithValue(ctxC, struct{}{}, 1), new(sendCtx))
	if s5.cw != s4.cw {
		t.Error("a context ending with the cached one registered again")
	}
	f.leave(s5)
	// A context that cannot end needs no registration.
	if s := f.enter(context.Background(), new(sendCtx)); s.cw != nil {
		t.Error("context.Background registered")
	} else {
		f.leave(s)
	}
	if err := f.close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.watch != nil {
		t.Error("the registration outlived the Mailer's close")
	}
}
