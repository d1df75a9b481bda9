package mailroute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/mailroute/go-mailroute/internal/message"
)

// errAttemptCutOff is the cause of an attempt stopped by attemptBudget.
var errAttemptCutOff = errors.New("mailroute: queue: attempt stopped before its lease ran out")

// attemptBudget is how long an attempt under qm's lease may run: 90% of
// the lease's remaining time, leaving the rest for recording the outcome
// while the lease still holds. The lease is on the queue's clock, the
// budget in real time: they agree except in tests with a fake clock, where
// the budget is the lease's length.
func (q *queueRuntime) attemptBudget(qm *QueuedMessage) time.Duration {
	left := q.lease
	if !qm.LeaseUntil.IsZero() {
		left = qm.LeaseUntil.Sub(q.now())
	}
	return left - left/10
}

// attempt is one leased message's turn, from its preparation to the
// record of its outcome: the message read back and checked, then the
// delivery's results. It is the one allocation of a drained message of
// one recipient besides what the store hands over.
type attempt struct {
	q   *queueRuntime
	bg  context.Context // the round's context without its end, for recording
	qm  *QueuedMessage
	due []int // indexes into qm.Recipients, decided by the round
	// addrs are qm.Recipients parsed by checkQueuedInto (in oneAddr for
	// one recipient).
	addrs   []message.Address
	oneAddr [1]message.Address
	body    *message.Body
	// waited: the message waited in its lane behind others, so the holds
	// are checked again when its delivery starts.
	waited          bool
	budget          time.Duration
	stopped, cutOff bool
	res             Result
	oneRes          [1]RecipientResult
	// dest is the first job's Destination: a Router or Resolver may keep
	// it, so it is never reused (like sendCall's).
	dest Destination
}

// prepare reads a leased message back for an attempt at its due
// recipients: its state checked as Send checks its input (quarantined
// when wrong) and its body opened and checked. The round prepares a
// destination's next message while the current one is on the wire. It
// returns nil when there is nothing to deliver, with ended reporting
// whether the lease was ended (a quarantine); false leaves the lease to
// the caller, when no recipient was due or the body could not be read.
func (q *queueRuntime) prepare(ctx, bg context.Context, qm *QueuedMessage, due []int) (a *attempt, ended bool) {
	a = &attempt{q: q, bg: bg, qm: qm, due: due}
	addrs, err := checkQueuedInto(qm, a.oneAddr[:0], &q.m.addrs)
	if err != nil {
		return nil, q.quarantine(ctx, qm, err)
	}
	a.addrs = addrs
	if len(due) == 0 {
		return nil, false
	}
	if q.attemptBudget(qm) <= 0 {
		return nil, false // the lease is as good as over: not a moment to start
	}
	a.body, err = q.openBody(ctx, qm.ID)
	switch {
	case errors.Is(err, ErrCorrupt): // the store quarantined it
		q.reportQuarantine(qm, err)
		return nil, true
	case errors.Is(err, errBadBody):
		return nil, q.quarantine(ctx, qm, err)
	case err != nil:
		// Unreadable for now (the store's I/O): keep the recipients.
		q.m.cfg.logger().Error("mailroute: queue: body", "id", qm.ID, "error", err)
		return nil, false
	}
	return a, false
}

// deliver tries a prepared message's due recipients once, within the
// lease (its context from cut, whose parent is ctx), and releases its
// body. It reports whether there is an outcome,
// which the caller must save (attempt.save records it and ends the
// lease): the delivery is over and its session back in the pool, so the
// caller can start the next delivery while the store makes this one
// durable. It returns false, leaving the lease to the caller, when the
// lease has no time left for an attempt.
func (q *queueRuntime) deliver(ctx context.Context, a *attempt, cut *cutoffs) bool {
	// Every delivery is over when runJobs returns (it waits for them
	// all), and nothing else reads the body: its memory serves the next
	// message read back, as a Send's does.
	defer a.body.Release()
	qm, due := a.qm, a.due
	a.budget = q.attemptBudget(qm)
	if a.budget <= 0 {
		return false
	}
	// The envelope of the due recipients, in due's order (job.index
	// refers to it), with the scratch lists and first job a Send uses.
	sc := sendScratchPool.Get().(*sendScratch)
	defer sc.release()
	env := envelope{from: qm.From, fromUTF8: utf8Local(qm.From)}
	if len(due) == 1 {
		env.rcpts, env.strs = a.addrs[due[0]:due[0]+1], sc.env.s[:1]
	} else {
		env.rcpts, env.strs = make([]message.Address, len(due)), make([]string, len(due))
		for k, i := range due {
			env.rcpts[k] = a.addrs[i]
		}
	}
	for k, i := range due {
		env.strs[k] = qm.Recipients[i].Rcpt // checked to be the parsed form
	}
	if len(due) == 1 {
		a.res.Recipients = a.oneRes[:]
	} else {
		a.res.Recipients = make([]RecipientResult, len(due))
	}
	jobs := q.jobs(qm, due, &env, a.body, &a.res, &sc.job, &a.dest)
	start := time.Now()
	actx, deadline := cut.context(start.Add(a.budget), a.budget)
	a.budget = deadline.Sub(start)
	if qm.RequireTLS {
		actx = WithREQUIRETLS(actx) // as it was on Send: see runJobs
	}
	q.m.runJobs(actx, jobs)
	// By the clock as well as Err: a connection's deadline (the same
	// instant) can fire before the context's own timer marks it done.
	finished := time.Now()
	a.stopped = ctx.Err() != nil
	if dl, ok := ctx.Deadline(); ok && !finished.Before(dl) {
		a.stopped = true
	}
	a.cutOff = !a.stopped && !finished.Before(deadline)
	// The holds now, not when the outcome is saved: the caller starts the
	// next delivery at once, and it must not go to a destination that
	// just pushed back.
	q.holdThrottled(qm, due, &a.res, a.stopped)
	return true
}

// save records a delivered attempt's outcome in the store, ending the
// lease, and reports it.
func (a *attempt) save() {
	a.q.record(a.bg, a.qm, a.due, &a.res, a.budget, a.stopped, a.cutOff)
}

// errBadBody marks a stored body that the Mailer refuses to send.
var errBadBody = errors.New("mailroute: queue: stored body refused")

// queueBodyInMemory is the largest stored body that openBody reads into
// memory before checking it: then NewBody is given its exact length, and
// makes the message in the memory a released Body handed back, in one
// pass without a regrowth, as Send does with a caller's bytes. A larger
// body is checked as it streams from the store. It is message's largest
// pooled Body, so that what the pool hands back is never wasted on it.
const queueBodyInMemory = 256 << 10

// bodyBuf is a read buffer of openBody and the reader over it, reused
// message after message.
type bodyBuf struct {
	b []byte
	r bytes.Reader
}

var bodyBufPool = sync.Pool{New: func() any { return &bodyBuf{b: make([]byte, 0, 4<<10)} }}

// openBody reads a queued body back, checked as Send checks a new one. A
// body the checks refuse wraps errBadBody; a failure to read it does not.
func (q *queueRuntime) openBody(ctx context.Context, id string) (*message.Body, error) {
	rc, err := q.store.Body(ctx, id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	bb := bodyBufPool.Get().(*bodyBuf)
	defer func() {
		bb.r.Reset(nil)
		if cap(bb.b) <= 2*queueBodyInMemory { // slices.Grow may round up
			bodyBufPool.Put(bb)
		}
	}()
	opts := message.BodyOptions{MaxSize: q.m.cfg.MaxMessageSize}
	var whole bool
	bb.b, whole, err = readUpTo(rc, bb.b[:0], queueBodyInMemory)
	if err != nil {
		return nil, err // the store's I/O, not the message
	}
	if whole {
		bb.r.Reset(bb.b)
		b, err := message.NewBody(&bb.r, opts) // can only refuse the message
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errBadBody, err)
		}
		return b, nil
	}
	bb.r.Reset(bb.b)
	r := &readErr{r: io.MultiReader(&bb.r, rc)}
	b, err := message.NewBody(r, opts)
	if err != nil && r.err == nil {
		return nil, fmt.Errorf("%w: %w", errBadBody, err)
	}
	return b, err
}

// readUpTo appends r's octets to buf until r ends (whole) or buf holds
// limit octets (not whole: the rest is still in r). An error is r's.
func readUpTo(r io.Reader, buf []byte, limit int) (_ []byte, whole bool, err error) {
	for {
		if len(buf) >= limit {
			return buf, false, nil
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(max(cap(buf), 4<<10), limit-len(buf)))
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			return buf, true, nil
		case err != nil:
			return buf, false, err
		}
	}
}

// readErr remembers whether reading failed, to tell a broken store from a
// body that is readable but refused.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// quarantine asks the store to set qm aside for good and reports it. When
// the store cannot, the message stays leased until the round ends and is
// checked, and refused, again on the next lease: it is never sent.
func (q *queueRuntime) quarantine(ctx context.Context, qm *QueuedMessage, reason error) bool {
	err := q.store.Quarantine(context.WithoutCancel(ctx), qm.ID, qm.Lease, reason)
	if err != nil {
		q.m.cfg.logger().Error("mailroute: queue: quarantine", "id", qm.ID, "reason", reason, "error", err)
		q.m.emit(Event{Kind: EventNotSaved, QueueID: qm.ID,
			Err: fmt.Errorf("mailroute: queue: the quarantine of %s (%w) was not saved; it is refused on every attempt: %w", qm.ID, reason, err)})
		return errors.Is(err, ErrLeaseLost)
	}
	q.reportQuarantine(qm, reason)
	return true
}

// reportQuarantine tells OnEvent about every recipient of a quarantined
// message (one event without a recipient when it had none).
func (q *queueRuntime) reportQuarantine(qm *QueuedMessage, reason error) {
	q.m.cfg.logger().Warn("mailroute: queue: entry quarantined", "id", qm.ID, "reason", reason)
	if len(qm.Recipients) == 0 {
		q.m.emit(Event{Kind: EventQuarantined, QueueID: qm.ID, Err: reason})
	}
	for _, r := range qm.Recipients {
		q.m.emit(Event{Kind: EventQuarantined, QueueID: qm.ID, Rcpt: r.Rcpt, Attempt: r.Attempts, Err: reason})
	}
}

// reportStoreQuarantines gives OnEvent the entries the store quarantined on
// its own (QuarantineReporter), which no attempt saw. Their recipients are
// unknown (the state was unreadable): one event per entry, without Rcpt.
func (q *queueRuntime) reportStoreQuarantines() {
	s, ok := q.store.(QuarantineReporter)
	if !ok {
		return
	}
	set := s.TakeQuarantined()
	for _, id := range slices.Sorted(maps.Keys(set)) { // a stable order for OnEvent
		q.m.emit(Event{Kind: EventQuarantined, QueueID: id, Err: set[id]})
	}
}

// known reports whether an attempt's outcome for a recipient is certain:
// the server accepted or refused it.
func known(s Status) bool { return s == Delivered || s == Failed }

// record applies an attempt's results to the queued message, persists it,
// and reports each outcome. bg carries the values of the round's context
// but not its end: an outcome is recorded whatever happens.
//
// When ctx ended during the attempt (stopped: Shutdown, or a Flush whose
// caller gave up) the outcomes already known are recorded and the other
// recipients stay exactly as they were: nobody knows whether the server
// took them. When the attempt was cut off to stay within its lease
// (cutOff), the unknown ones are deferred like any temporary failure,
// saying why.
func (q *queueRuntime) record(bg context.Context, qm *QueuedMessage, due []int, res *Result, budget time.Duration, stopped, cutOff bool) {
	now := q.now()
	// Which recipients leave the queue, and the events: on the stack for
	// the few recipients of most messages.
	var removeBuf [8]bool
	remove := removeBuf[:0]
	if len(qm.Recipients) > len(removeBuf) {
		remove = make([]bool, len(qm.Recipients))
	} else {
		remove = removeBuf[:len(qm.Recipients)]
	}
	var eventBuf [1]Event
	events := eventBuf[:0]
	var bounces []bounce
	for k, i := range due {
		rr := res.Recipients[k]
		qr := &qm.Recipients[i]
		if stopped && !known(rr.Status) {
			continue
		}
		if cutOff && !known(rr.Status) {
			rr.Status = Deferred
			cause := rr.Err
			if cause == nil {
				cause = errAttemptCutOff
			}
			rr.Err = fmt.Errorf("mailroute: queue: attempt stopped after %v, before its lease ran out (whether the server took it is unknown): %w", budget, cause)
		}
		qr.Attempts++
		ev := Event{QueueID: qm.ID, Rcpt: qr.Rcpt, Route: rr.Route, Via: rr.Via, Fallback: rr.Fallback, TLS: rr.TLS,
			Host: rr.Host, Attempt: qr.Attempts, Err: rr.Err}
		switch rr.Status {
		case Delivered:
			ev.Kind = EventDelivered
			remove[i] = true
		case Failed:
			ev.Kind = EventFailed
			remove[i] = true
			bounces = append(bounces, bounce{rcpt: qr.Rcpt, err: rr.Err, attempts: qr.Attempts, host: rr.Host})
		default:
			if rr.Via == Direct && !rr.Fallback {
				qr.DirectAttempts++
			}
			if rr.Err != nil {
				qr.LastError = rr.Err.Error()
			}
			if now.Sub(qr.Queued) >= q.policy.MaxAge {
				ev.Kind = EventGaveUp
				remove[i] = true
				bounces = append(bounces, bounce{rcpt: qr.Rcpt, err: rr.Err, attempts: qr.Attempts, host: rr.Host, gaveUp: true})
				break
			}
			// From the end of the attempt, not its start: a greylister's
			// clock started at our RCPT, and a slow attempt must not eat
			// into the wait (see RetryPolicy).
			qr.NextAttempt = now.Add(q.policy.delay(qr.Attempts))
			ev.Kind, ev.NextAttempt = EventDeferred, qr.NextAttempt
			if throttledBy(rr.Err) {
				q.hold(domainOf(qr.Rcpt), qr.NextAttempt)
			}
		}
		events = append(events, ev)
	}
	if len(events) == 0 { // stopped before anything was known
		if err := q.store.Release(bg, qm.ID, qm.Lease); err != nil {
			q.m.cfg.logger().Error("mailroute: queue: release", "id", qm.ID, "error", err)
		}
		return
	}
	kept := qm.Recipients[:0]
	for i, r := range qm.Recipients {
		if !remove[i] {
			kept = append(kept, r)
		}
	}
	qm.Recipients = kept
	var headers []byte
	if len(bounces) > 0 && q.m.cfg.DSN {
		headers = q.m.originalHeaders(bg, qm.ID) // before Update may delete the body
	}
	if err := q.store.Update(bg, qm); err != nil {
		q.notSaved(qm, events, err)
		return
	}
	for _, ev := range events {
		q.m.emit(ev)
	}
	if len(bounces) > 0 {
		q.m.sendDSN(bg, qm, bounces, headers, now)
	}
}

// notSaved reports an attempt whose outcome the store did not take: each
// outcome as it happened (a delivery did happen), without a schedule that
// was never stored, each followed by EventNotSaved saying what was lost.
// The stored state is the one before the attempt, so the recipients are
// tried again — a delivered one then twice, which is the price of never
// losing one — and no DSN is sent for failures that will be retried.
func (q *queueRuntime) notSaved(qm *QueuedMessage, events []Event, err error) {
	q.m.cfg.logger().Error("mailroute: queue: recording an attempt", "id", qm.ID, "error", err)
	for _, ev := range events {
		what := "the removal from the queue"
		if ev.Kind == EventDeferred {
			what = fmt.Sprintf("the next attempt at %s", ev.NextAttempt.UTC().Format(time.RFC3339))
			ev.NextAttempt = time.Time{}
		}
		q.m.emit(ev)
		q.m.emit(Event{Kind: EventNotSaved, QueueID: qm.ID, Rcpt: ev.Rcpt, Route: ev.Route, Via: ev.Via,
			Fallback: ev.Fallback, TLS: ev.TLS, Host: ev.Host, Attempt: ev.Attempt,
			Err: fmt.Errorf("mailroute: queue: %s after %s was not saved; the recipient stays queued as it was and is tried again: %w", what, ev.Kind, err)})
	}
}

// holdThrottled holds back the destinations that pushed back on this
// attempt (throttledBy) until the recipient's next attempt, as record will
// schedule it, before the attempt's slot is leased again. record holds
// them too, from its own clock reading, which only extends the hold.
func (q *queueRuntime) holdThrottled(qm *QueuedMessage, due []int, res *Result, stopped bool) {
	for k, i := range due {
		rr := &res.Recipients[k]
		if known(rr.Status) || stopped || !throttledBy(rr.Err) {
			continue
		}
		qr := &qm.Recipients[i]
		q.hold(domainOf(qr.Rcpt), q.now().Add(q.policy.delay(qr.Attempts+1)))
	}
}
