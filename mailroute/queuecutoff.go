package mailroute

import (
	"context"
	"sync"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// cutoffs makes the contexts that stop attempts before their leases end
// (see attemptBudget), for one runner, whose attempts follow each other.
// A context lasts from attempt to attempt while its deadline is at most
// budget/cutoffSlack before the one the next attempt is due, and never
// after it: budgets are tens of minutes and a runner's attempts start
// seconds apart, so one context, with its timer, serves hundreds of them
// instead of one per message. An attempt cut off at the deadline ends the
// context, and the next attempt gets a new one.
type cutoffs struct {
	parent context.Context
	cur    *cutCtx
	cancel context.CancelFunc
	at     time.Time // cur's deadline
}

// cutoffSlack: a context's deadline may be this fraction of the budget
// earlier than an attempt's own (1/64: 38 seconds of the default 40
// minutes), which the attempt then reports as its budget.
const cutoffSlack = 64

// context returns a context done with the parent or at deadline, at most
// budget/cutoffSlack before want and never after it.
func (c *cutoffs) context(want time.Time, budget time.Duration) (ctx context.Context, deadline time.Time) {
	if c.cur != nil && c.cur.Err() == nil && !c.at.After(want) && !c.at.Before(want.Add(-budget/cutoffSlack)) {
		return c.cur, c.at
	}
	c.stop()
	dctx, cancel := context.WithDeadlineCause(c.parent, want, errAttemptCutOff)
	cur := &cutCtx{Context: dctx}
	cur.watches = cur.few[:0]
	stop := context.AfterFunc(dctx, cur.fire)
	c.cur, c.at = cur, want
	c.cancel = func() { stop(); cancel() }
	return cur, want
}

// stop ends the context in use, with its timer.
func (c *cutoffs) stop() {
	if c.cancel != nil {
		c.cancel()
		c.cur, c.cancel = nil, nil
	}
}

// cutCtx is a cut-off context as the SMTP engine sees it: a
// smtpclient.Watcher, so that each operation of each attempt registers
// its abort here, in a slot reused from operation to operation, instead
// of with context.AfterFunc (two allocations an operation). The context
// itself registers once, and fires every abort registered when it ends.
type cutCtx struct {
	context.Context
	mu      sync.Mutex
	done    bool
	watches []func() // by token; nil is a free slot
	few     [2]func()
}

var _ smtpclient.Watcher = (*cutCtx)(nil)

// Watch registers an operation's abort (smtpclient.Watcher).
func (c *cutCtx) Watch(abort func()) int {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		abort()
		return -1
	}
	defer c.mu.Unlock()
	for i, f := range c.watches {
		if f == nil {
			c.watches[i] = abort
			return i
		}
	}
	c.watches = append(c.watches, abort)
	return len(c.watches) - 1
}

// Unwatch undoes Watch: once it returns, that abort is not called.
func (c *cutCtx) Unwatch(tok int) {
	if tok < 0 {
		return
	}
	c.mu.Lock()
	c.watches[tok] = nil
	c.mu.Unlock()
}

// fire runs when the context ends: every operation registered is
// aborted, and those registering later are at once.
func (c *cutCtx) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	for _, f := range c.watches {
		if f != nil {
			f()
		}
	}
}
