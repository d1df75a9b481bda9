package mailroute

import (
	"context"
	"sync"
)

// ctxWatch is one context.AfterFunc registration on a caller's context,
// shared by the Sends that pass that context (or another that ends with
// it: the same Done channel) one after another, as a program that sends
// with one long-lived or per-batch context does. Registering the SMTP
// engine's abort on the caller's context for every Send cost two
// allocations, the parent's mutex twice and an insertion into and a
// removal from its map of children; an operation now takes a slot here
// under a mutex of its own, and only a Send with a context that differs
// from the last one registers anew.
//
// The registration outlives the Sends that use it until another context
// takes its place (or the Mailer closes): it then holds this small value
// in the context's list of children, and, if the context ends meanwhile,
// fire runs once and finds nothing to abort.
type ctxWatch struct {
	done <-chan struct{} // the context's Done: what makes two contexts the same here
	stop func() bool     // the AfterFunc registration's

	mu      sync.Mutex
	fired   bool
	aborts  []func() // the engine operations bound to the context now; nil = a free slot
	n       int      // slots in use
	current bool     // it is the inflight's cached one; once not, the last remove stops it
}

// watchFor returns the registration for ctx, whose Done is done (not
// nil), made when the cached one is for another context. f.mu is held.
func (f *inflight) watchFor(ctx context.Context, done <-chan struct{}) *ctxWatch {
	if w := f.watch; w != nil && w.done == done {
		return w
	}
	w := &ctxWatch{done: done, current: true}
	w.stop = context.AfterFunc(ctx, w.fire)
	f.dropWatch()
	f.watch = w
	return w
}

// dropWatch lets go of the cached registration: it is stopped now, or by
// the last operation still in it. f.mu is held.
func (f *inflight) dropWatch() {
	w := f.watch
	if w == nil {
		return
	}
	f.watch = nil
	w.mu.Lock()
	w.current = false
	if w.n == 0 {
		w.stop()
	}
	w.mu.Unlock()
}

// fire runs when the context is done: every operation bound to it is
// aborted, and so is any bound later.
func (w *ctxWatch) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fired = true
	for _, abort := range w.aborts {
		if abort != nil {
			abort()
		}
	}
}

// add binds an operation's abort to the context and returns its slot. A
// context already done aborts it at once.
func (w *ctxWatch) add(abort func()) int {
	w.mu.Lock()
	slot := -1
	for i, a := range w.aborts {
		if a == nil {
			slot = i
			break
		}
	}
	if slot < 0 {
		slot = len(w.aborts)
		w.aborts = append(w.aborts, nil)
	}
	w.aborts[slot] = abort
	w.n++
	fired := w.fired
	w.mu.Unlock()
	if fired {
		abort()
	}
	return slot
}

// remove undoes add: after it returns, abort is not called for that
// slot any more.
func (w *ctxWatch) remove(slot int) {
	w.mu.Lock()
	w.aborts[slot] = nil
	w.n--
	if w.n == 0 && !w.current {
		w.stop()
	}
	w.mu.Unlock()
}
