package mailroute

import (
	"context"
	"sync"
	"sync/atomic"
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
	// shut is set (before ctx is cancelled) when Shutdown cancels the
	// Sends in flight: what a sendCtx reads instead of ctx.Err().
	shut atomic.Bool
	// sends holds, by slot, the context of each Send running; free lists
	// the empty slots. Shutdown interrupts them all. A slot costs no
	// allocation once the slice has grown.
	sends []*sendCtx
	free  []int
	// watch is the registration on the caller's context of the latest
	// Send whose context can end (see ctxWatch); under mu.
	watch *ctxWatch
}

func (f *inflight) init() {
	f.ctx, f.cancel = context.WithCancel(context.Background())
}

// enter counts a Send in, with its context: the caller's, which also ends
// when Shutdown cancels the Sends in flight. It returns nil after Shutdown
// began. s is the caller's own, made for this Send alone: code handed the
// context may keep it, and finds it done after leave.
func (f *inflight) enter(ctx context.Context, s *sendCtx) *sendCtx {
	*s = sendCtx{Context: ctx, f: f}
	s.watches = s.oneWatch[:0]
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.wg.Add(1)
	if done := ctx.Done(); done != nil {
		s.cw = f.watchFor(ctx, done)
	}
	s.slot = len(f.sends)
	if n := len(f.free); n > 0 {
		s.slot, f.free = f.free[n-1], f.free[:n-1]
		f.sends[s.slot] = s
	} else {
		f.sends = append(f.sends, s)
	}
	return s
}

// leave counts out the Send of s.
func (f *inflight) leave(s *sendCtx) {
	f.mu.Lock()
	f.sends[s.slot] = nil
	f.free = append(f.free, s.slot)
	f.mu.Unlock()
	s.release()
	f.wg.Done()
}

// cancelAll cancels every Send in flight and what they look up.
func (f *inflight) cancelAll() {
	f.shut.Store(true)
	f.cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.sends {
		if s != nil {
			s.interrupt()
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
	defer func() {
		// Every Send has returned: the registration on the last one's
		// context is let go.
		f.mu.Lock()
		f.dropWatch()
		f.mu.Unlock()
	}()
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

// sendCtx is the context of one Send: the caller's, done also when
// Shutdown cancels the Sends in flight. Deriving a cancellable context for
// that on every Send, and then registering each SMTP operation on it with
// context.AfterFunc, cost six allocations and two mutexes per message;
// most Sends never block on anything but their transaction on a pooled
// session. So the derived context is made only when something asks for
// Done (a lookup, a dial, a wait for a session, a Router), and the SMTP
// engine, which sees a smtpclient.Watcher, registers its abort here: on
// the caller's context when that can end (through a registration that
// Sends with the same context share, see ctxWatch), and with Shutdown
// through the slot.
type sendCtx struct {
	context.Context // the caller's
	f               *inflight
	slot            int
	cw              *ctxWatch // the registration on the caller's context, when it can end

	mu sync.Mutex
	// derived is nil until Done is asked for; set once, under mu, and
	// read without it (Err and Value are on every Send's path).
	derived atomic.Pointer[derivedCtx]
	cancel  context.CancelFunc
	ended   atomic.Bool // release ran: the Send is over
	// watches are the engine's abort functions registered by Watch, by
	// token; a nil f is a free entry. One fits in oneWatch.
	watches  []watch
	oneWatch [1]watch
}

type derivedCtx struct{ context.Context }

type watch struct {
	f    func()
	stop func() bool // its registration on the derived context, or nil
	cw   *ctxWatch   // or its slot in the registration on the caller's
	slot int
}

var _ interface {
	context.Context
	Watch(func()) int
	Unwatch(int)
} = (*sendCtx)(nil)

// Done returns a channel closed when the caller's context is done or
// Shutdown cancels the Send, made on first use.
func (s *sendCtx) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.derive().Done()
}

// derive makes the derived context; s.mu is held.
func (s *sendCtx) derive() context.Context {
	if d := s.derived.Load(); d != nil {
		return d.Context
	}
	d, cancel := context.WithCancel(s.Context)
	s.cancel = cancel
	s.derived.Store(&derivedCtx{d})
	if s.f.shut.Load() || s.ended.Load() {
		cancel()
	}
	return d
}

// Err is the caller's context's error, else context.Canceled once
// Shutdown cancelled the Send.
func (s *sendCtx) Err() error {
	if d := s.derived.Load(); d != nil {
		return d.Err()
	}
	if err := s.Context.Err(); err != nil {
		return err
	}
	if s.ended.Load() || s.f.shut.Load() {
		return context.Canceled
	}
	return nil
}

// Value looks in the derived context once there is one, so that a
// context derived from s finds its cancellation there.
func (s *sendCtx) Value(key any) any {
	if d := s.derived.Load(); d != nil {
		return d.Value(key)
	}
	return s.Context.Value(key)
}

// Watch registers the SMTP engine's abort for one operation
// (smtpclient.Watcher).
func (s *sendCtx) Watch(abort func()) int {
	if d := s.derived.Load(); d != nil {
		// Cancellation is merged into the derived context already.
		return s.addWatch(watch{f: abort, stop: context.AfterFunc(d.Context, abort)})
	}
	w := watch{f: abort}
	if s.cw != nil {
		w.cw, w.slot = s.cw, s.cw.add(abort)
	}
	tok := s.addWatch(w)
	// Shutdown sets shut before it interrupts the slots: either it found
	// this watch, or this sees shut. abort may then run twice, harmlessly.
	if s.f.shut.Load() {
		abort()
	}
	return tok
}

func (s *sendCtx) addWatch(w watch) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.watches {
		if s.watches[i].f == nil {
			s.watches[i] = w
			return i
		}
	}
	s.watches = append(s.watches, w)
	return len(s.watches) - 1
}

// Unwatch undoes Watch.
func (s *sendCtx) Unwatch(tok int) {
	s.mu.Lock()
	w := s.watches[tok]
	s.watches[tok] = watch{}
	s.mu.Unlock()
	if w.stop != nil {
		w.stop()
	}
	if w.cw != nil {
		w.cw.remove(w.slot)
	}
}

// interrupt cancels the Send: its derived context and every operation
// registered. Called by Shutdown, with f.mu held.
func (s *sendCtx) interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
	for _, w := range s.watches {
		if w.f != nil {
			w.f()
		}
	}
}

// release ends the Send's context: the derived one is cancelled (which
// releases it from its parent), and anything that kept s and asks later
// finds it done.
func (s *sendCtx) release() {
	s.mu.Lock()
	s.ended.Store(true)
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
}
