package mailroute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailroute/go-mailroute/internal/message"
)

// Queue runtime defaults.
const (
	// queueLease is how long a leased message stays hidden from other
	// workers and instances. Attempts are cut off before it ends (see
	// attemptBudget), so it only decides how soon the mail of an instance
	// that died is taken over.
	queueLease = 45 * time.Minute
	queuePoll  = time.Second
	// queueRecordingFactor times Config.Concurrency is how many attempts
	// may wait for their outcome to be stored while others deliver. The
	// store makes outcomes durable in shared fsyncs of several
	// milliseconds each on a busy disk, so the drain's rate is about this
	// many outcomes per fsync; each waiting outcome holds only its small
	// QueuedMessage.
	queueRecordingFactor = 4
	shutdownTimeout      = 30 * time.Second
)

// ErrNoQueue is returned by the queue's methods when Config.Queue is nil.
var ErrNoQueue = errors.New("mailroute: no queue configured (Config.Queue)")

// queueRuntime runs the queue of one Mailer: it persists what Send could
// not deliver and retries it on the RetryPolicy's schedule.
type queueRuntime struct {
	m      *Mailer
	store  QueueStore
	policy RetryPolicy
	now    func() time.Time
	poll   time.Duration
	lease  time.Duration

	wake chan struct{} // a new message is due now
	// firstRound is closed when the worker's first round, which tries
	// what was queued before New, is over. Tests that run rounds
	// themselves on a fake clock wait for it: until then a round of the
	// worker's may run beside theirs, whenever the scheduler starts it.
	firstRound chan struct{}

	holdMu sync.Mutex
	holds  map[string]time.Time // destination domain → not before
	// holding is len(holds), set under holdMu, so that the queue's many
	// questions while nothing is held take no lock (and no domain).
	holding atomic.Int32

	// run is cancelled when Shutdown's context ends: attempts in flight
	// then stop, and their recipients stay queued.
	run     context.Context
	cancel  context.CancelFunc
	stop    chan struct{}
	stopped sync.WaitGroup
}

func newQueueRuntime(m *Mailer) *queueRuntime {
	q := &queueRuntime{
		m:          m,
		store:      m.cfg.Queue,
		policy:     m.cfg.Retry.withDefaults(),
		now:        time.Now,
		poll:       queuePoll,
		lease:      queueLease,
		wake:       make(chan struct{}, 1),
		firstRound: make(chan struct{}),
		holds:      make(map[string]time.Time),
		stop:       make(chan struct{}),
	}
	if m.cfg.now != nil {
		q.now = m.cfg.now
	}
	if m.cfg.queuePoll > 0 {
		q.poll = m.cfg.queuePoll
	}
	if m.cfg.queueLease > 0 {
		q.lease = m.cfg.queueLease
	}
	q.run, q.cancel = context.WithCancel(context.Background())
	return q
}

// start runs the worker loop until shutdown.
func (q *queueRuntime) start() {
	q.startNotifier()
	q.stopped.Add(1)
	go func() {
		defer q.stopped.Done()
		t := time.NewTicker(q.poll)
		defer t.Stop()
		q.drainRound(q.run, "", false, q.wake)
		close(q.firstRound)
		for {
			select {
			case <-q.stop:
				return
			case <-q.wake:
			case <-t.C:
			}
			q.drainRound(q.run, "", false, q.wake)
		}
	}()
}

// shutdown stops leasing new work and waits for the attempts in flight;
// when ctx ends first they are cancelled, and their recipients stay queued.
func (q *queueRuntime) shutdown(ctx context.Context) error {
	close(q.stop)
	done := make(chan struct{})
	go func() { q.stopped.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		q.cancel()
		<-done
		return ctx.Err()
	}
}

func (q *queueRuntime) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// appendDue appends to due the indexes of qm's recipients to be tried in
// this round.
func (q *queueRuntime) appendDue(due []int, qm *QueuedMessage, now time.Time, domain string, flush bool) []int {
	for i := range qm.Recipients {
		if q.due(&qm.Recipients[i], now, domain, flush) {
			due = append(due, i)
		}
	}
	return due
}

// notHeld returns the recipients of due whose destination is not held
// back now: a message that waited in its lane checks again what was
// decided when it was leased.
func (q *queueRuntime) notHeld(qm *QueuedMessage, due []int) []int {
	now := q.now()
	var out []int
	for k, i := range due {
		if q.heldBack(domainOf(qm.Recipients[i].Rcpt), now) {
			if out == nil {
				out = append(make([]int, 0, len(due)), due[:k]...)
			}
			continue
		}
		if out != nil {
			out = append(out, i)
		}
	}
	if out == nil {
		return due // none held: the common case, without a copy
	}
	return out
}

// heldBack reports whether a destination is held back at now.
func (q *queueRuntime) heldBack(domain string, now time.Time) bool {
	if q.holding.Load() == 0 {
		return false // the common case, without the lock
	}
	q.holdMu.Lock()
	hold := q.holds[domain]
	q.holdMu.Unlock()
	return hold.After(now)
}

// due reports whether a queued recipient is to be tried in this round.
func (q *queueRuntime) due(r *QueuedRecipient, now time.Time, domain string, flush bool) bool {
	if flush {
		return domain == "" || domainOf(r.Rcpt) == domain
	}
	if r.NextAttempt.After(now) {
		return false
	}
	return q.holding.Load() == 0 || !q.heldBack(domainOf(r.Rcpt), now)
}

func domainOf(rcpt string) string {
	return strings.ToLower(rcpt[strings.LastIndexByte(rcpt, '@')+1:])
}

// jobs groups the due recipients (env, in due's order) by domain, the
// first domain's in first when not nil, as Send does (see groupEnv).
// Recipients whose direct attempts reached RetryPolicy.FallbackAfter go to
// the relay, when there is one: the fallback over time.
func (q *queueRuntime) jobs(qm *QueuedMessage, due []int, env *envelope, body *message.Body, res *Result, first *job, firstDest *Destination) []*job {
	direct := q.m.groupEnv(env, body, res, first, firstDest)
	for _, j := range direct {
		j.relay = q.m.relay
	}
	if (q.m.relay == nil && len(q.m.relays.byName) == 0) || q.policy.FallbackAfter < 0 {
		return direct
	}
	if !slices.ContainsFunc(due, func(i int) bool { return qm.Recipients[i].DirectAttempts >= q.policy.FallbackAfter }) {
		return direct // nobody falls back: the list as it is, without a copy
	}
	var out []*job
	for _, j := range direct {
		var keep, move []int
		for k := range j.rcpts {
			if qm.Recipients[due[j.index[k]]].DirectAttempts >= q.policy.FallbackAfter {
				move = append(move, k)
			} else {
				keep = append(keep, k)
			}
		}
		if len(move) == 0 {
			out = append(out, j)
			continue
		}
		relayJob := &job{
			dest: j.dest, from: j.from, utf8: j.utf8, body: j.body, relay: j.relay, result: j.result,
			forceRelay: true,
			route: Route{Via: Relayed, Reason: fmt.Sprintf("%d deferred direct attempts: fallback to the relay (RetryPolicy.FallbackAfter)",
				q.policy.FallbackAfter)},
		}
		for _, k := range move {
			relayJob.rcpts = append(relayJob.rcpts, j.rcpts[k])
			relayJob.index = append(relayJob.index, j.index[k])
		}
		out = append(out, relayJob)
		if len(keep) > 0 {
			rest := *j
			rest.rcpts, rest.index = nil, nil
			for _, k := range keep {
				rest.rcpts = append(rest.rcpts, j.rcpts[k])
				rest.index = append(rest.index, j.index[k])
			}
			out = append(out, &rest)
		}
	}
	return out
}

// utf8Local reports whether a stored reverse-path needs SMTPUTF8.
func utf8Local(from string) bool {
	for i := 0; i < len(from); i++ {
		if from[i] >= 0x80 {
			return true
		}
	}
	return false
}

// throttledBy reports whether a deferral was the destination pushing back
// (421 "too busy", a 4.7.x rate limit) rather than one recipient's
// problem, so that the destination's other queued mail waits too.
func throttledBy(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Code == 421 {
		return true
	}
	return e.Code/100 == 4 && e.Enhanced[1] == 7 && Classify(err) != ClassGreylist
}

// hold keeps a destination's queued mail back until t.
func (q *queueRuntime) hold(domain string, t time.Time) {
	q.holdMu.Lock()
	if t.After(q.holds[domain]) {
		q.holds[domain] = t
	}
	for d, until := range q.holds { // forget holds that have passed
		if until.Before(q.now()) {
			delete(q.holds, d)
		}
	}
	q.holding.Store(int32(len(q.holds)))
	q.holdMu.Unlock()
}

// enqueueDeferred persists the recipients Send could not deliver, before
// Send returns; their status becomes Queued. When the store fails, they
// stay Deferred with the store's error joined to theirs.
func (q *queueRuntime) enqueueDeferred(ctx context.Context, from string, res *Result, body *message.Body) {
	now := q.now()
	qm := &QueuedMessage{From: from, Created: now, RequireTLS: requiresTLS(ctx)}
	var idx []int
	for i, r := range res.Recipients {
		if r.Status != Deferred {
			continue
		}
		qr := QueuedRecipient{Rcpt: r.Rcpt, Attempts: 1, Queued: now, NextAttempt: now.Add(q.policy.delay(1))}
		if r.Via == Direct && !r.Fallback {
			qr.DirectAttempts = 1
		}
		if r.Err != nil {
			qr.LastError = r.Err.Error()
		}
		qm.Recipients = append(qm.Recipients, qr)
		idx = append(idx, i)
	}
	if len(idx) > 0 {
		err := q.store.Enqueue(context.WithoutCancel(ctx), qm, body.Reader())
		for k, i := range idx {
			r := &res.Recipients[i]
			if err != nil {
				r.Err = errors.Join(r.Err, fmt.Errorf("mailroute: not queued: %w", err))
				continue
			}
			r.Status = Queued
			q.m.emit(Event{Kind: EventQueued, QueueID: qm.ID, Rcpt: r.Rcpt, Route: r.Route, Via: r.Via, TLS: r.TLS,
				Fallback: r.Fallback, Host: r.Host, Attempt: 1, NextAttempt: qm.Recipients[k].NextAttempt, Err: r.Err})
		}
	}
	q.m.reportFirstAttempt(res)
}

// reportFirstAttempt gives OnEvent the outcomes of a Send's attempt that
// did not enter the queue.
func (m *Mailer) reportFirstAttempt(res *Result) {
	if m.cfg.OnEvent == nil {
		return
	}
	for _, r := range res.Recipients {
		ev := Event{Rcpt: r.Rcpt, Route: r.Route, Via: r.Via, Fallback: r.Fallback, TLS: r.TLS, Host: r.Host, Attempt: 1, Err: r.Err}
		switch r.Status {
		case Delivered:
			ev.Kind = EventDelivered
		case Failed:
			ev.Kind = EventFailed
		case Deferred:
			ev.Kind = EventDeferred
		default:
			continue // Queued: reported when it was queued
		}
		m.emit(ev)
	}
}

func (m *Mailer) emit(ev Event) {
	if m.cfg.OnEvent != nil {
		m.cfg.OnEvent(ev)
	}
}

// Enqueue stores a message in the queue and returns once it is durable;
// the queue's workers deliver it, at once and then on the RetryPolicy's
// schedule. For mail that must never be lost even if the process dies
// during delivery: Send attempts first and queues only what failed.
// Addresses and body are checked as by Send; a ctx from WithREQUIRETLS
// queues the message with that mark (QueuedMessage.RequireTLS).
func (m *Mailer) Enqueue(ctx context.Context, from string, to []string, msg io.Reader) (id string, err error) {
	if m.queue == nil {
		return "", ErrNoQueue
	}
	select {
	case <-m.closed:
		return "", ErrClosed
	default:
	}
	env, _, err := parseEnvelope(from, to)
	if err != nil {
		return "", fmt.Errorf("mailroute: %w", err)
	}
	body, err := m.readBody(msg)
	if err != nil {
		return "", fmt.Errorf("mailroute: %w", err)
	}
	defer body.Close()
	now := m.queue.now()
	qm := &QueuedMessage{From: env.from, Created: now, RequireTLS: requiresTLS(ctx)}
	for _, a := range env.rcpts {
		qm.Recipients = append(qm.Recipients, QueuedRecipient{Rcpt: a.String(), Queued: now, NextAttempt: now})
	}
	if err := m.queue.store.Enqueue(ctx, qm, body.Reader()); err != nil {
		return "", fmt.Errorf("mailroute: queue: %w", err)
	}
	m.queue.poke()
	return qm.ID, nil
}

// QueueList returns what is queued: every message with its recipients,
// attempts, next attempt and last error (mailroute's `postqueue -p`).
func (m *Mailer) QueueList(ctx context.Context) ([]*QueuedMessage, error) {
	if m.queue == nil {
		return nil, ErrNoQueue
	}
	return m.queue.store.List(ctx)
}

// Flush retries now every queued recipient at domain, or every queued
// recipient when domain is "", whatever their schedule (mailroute's
// `postqueue -f`), and returns when the attempt is over. Messages that a
// worker (or another instance on a shared store) is attempting at the
// moment are left to it: the store never leases a message twice. When ctx
// ends mid-attempt, the outcomes already known are recorded, as by
// Shutdown.
func (m *Mailer) Flush(ctx context.Context, domain string) error {
	if m.queue == nil {
		return ErrNoQueue
	}
	if domain != "" {
		d, err := parseDestination(domain)
		if err != nil {
			return err
		}
		domain = d.Domain
	}
	m.queue.round(ctx, domain, true)
	return nil
}
