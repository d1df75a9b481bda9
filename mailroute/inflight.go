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
	done   func() // f.wg.Done, made once
}

func (f *inflight) init() {
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.done = f.wg.Done
}

// enter counts a Send in, with a context that also ends when Shutdown
// cancels the Sends in flight. It reports false after Shutdown began.
func (f *inflight) enter(ctx context.Context) (context.Context, func(), bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, nil, false
	}
	f.wg.Add(1)
	if ctx == context.Background() {
		// The common call without a context of its own: f.ctx is the same
		// context plus Shutdown's cancellation, at no cost per call.
		return f.ctx, f.done, true
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(f.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
		f.wg.Done()
	}, true
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
		f.cancel()
		<-done
		return ctx.Err()
	}
}
