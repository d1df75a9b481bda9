package mailroute

import (
	"context"
	"sync"
)

// inflight tracks the Sends running on a Mailer, so that Shutdown can wait
// for them and, when its context ends first, cancel them. Until every one
// has returned, no pool is closed: a Send whose MX lookup was still running
// at Close would otherwise open a session after the pools were closed,
// which nothing would ever close.
type inflight struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context // done when Shutdown stops waiting
	cancel context.CancelFunc
	// cancels holds, by slot, the cancel function of each Send running
	// with a context of its own; free lists the empty slots. Shutdown
	// calls them all. A slot costs no allocation once the slice has grown,
	// where context.AfterFunc(f.ctx, cancel) and a closure to undo it
	// cost three per Send.
	cancels []context.CancelFunc
	free    []int
}

func (f *inflight) init() {
	f.ctx, f.cancel = context.WithCancel(context.Background())
}

// enter counts a Send in, with a context that also ends when Shutdown
// cancels the Sends in flight, and the slot to hand to leave. It reports
// false after Shutdown began.
func (f *inflight) enter(ctx context.Context) (context.Context, int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, 0, false
	}
	f.wg.Add(1)
	if ctx == context.Background() {
		// The common call without a context of its own: f.ctx is the same
		// context plus Shutdown's cancellation, at no cost per call.
		return f.ctx, -1, true
	}
	ctx, cancel := context.WithCancel(ctx)
	if f.ctx.Err() != nil {
		// Shutdown has already cancelled the Sends in flight (possible
		// only for a Send that raced with it past the closed check).
		cancel()
	}
	slot := len(f.cancels)
	if n := len(f.free); n > 0 {
		slot, f.free = f.free[n-1], f.free[:n-1]
		f.cancels[slot] = cancel
	} else {
		f.cancels = append(f.cancels, cancel)
	}
	return ctx, slot, true
}

// leave counts out the Send that entered with slot.
func (f *inflight) leave(slot int) {
	if slot >= 0 {
		f.mu.Lock()
		cancel := f.cancels[slot]
		f.cancels[slot] = nil
		f.free = append(f.free, slot)
		f.mu.Unlock()
		cancel() // releases the context from its parent
	}
	f.wg.Done()
}

// cancelAll cancels every Send in flight and what they look up.
func (f *inflight) cancelAll() {
	f.cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, cancel := range f.cancels {
		if cancel != nil {
			cancel()
		}
	}
}

// close refuses new Sends and waits for those in flight; when ctx ends
// first it cancels them and waits for them to return, which they do
// promptly: every lookup, dial, read and write honours the context.
func (f *inflight) close(ctx context.Context) error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		f.cancelAll()
		<-done
		return ctx.Err()
	}
}
