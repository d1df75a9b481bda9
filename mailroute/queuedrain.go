package mailroute

import (
	"context"
	"sync"
	"time"
)

// A queue round runs its attempts the way Send runs its transactions: one
// goroutine per session a destination allows, each taking the
// destination's next message as soon as its previous delivery is over, on
// the session it has just handed back to the pool, while the message
// after it is read back from the store beside it. The alternative — a
// goroutine per leased message, all queueing for the destination's few
// sessions — hands the session from one goroutine to the next after every
// transaction, and with a hundred of them runnable the next holder waits
// for the scheduler while the session sits idle. A delivery's outcome is
// saved by one of the round's recorders, beside the runners, so that the
// store's commit (a shared fsync) overlaps the next deliveries.
//
// The goroutines live as long as their work does, not one per message: a
// runner's preparer for as long as the runner, the recorders for the round
// (as many as outcomes wait for the store at once). A goroutine started
// per message begins on a small stack and grows it, copying it each time,
// down the store's and the engine's deep calls: that cost as much as the
// rest of the runtime's work per message together.
//
// Leases are taken in batches, ahead of the attempts: the round keeps up
// to queueLeaseAhead×Config.Concurrency messages leased, and leases again
// when half of them are done, or when every leased message has started,
// instead of one lease per finished attempt (for a database store, a
// round trip per message saved). The messages leased ahead wait in their
// destination's lane, so that a destination whose sessions are all busy
// does not hold up the others.

// queueLeaseAhead times Config.Concurrency is the most messages a round
// holds leased: attempts in progress plus the next ones, ready in their
// lanes. A message's lease runs while it waits there; one that waited
// until too little of it is left for an attempt (see attemptBudget) is
// not tried, and its lease is released when the round ends.
const queueLeaseAhead = 2

// round leases the messages due now (all of them when flushing) and
// attempts them until none is left, Config.Concurrency at a time. A
// message with nothing to try (its destination held back) stays leased
// until the round ends, so that the next lease reaches the others; so does
// a message a flush already tried, so that a flush tries each message once.
// A flush leases like a worker, so it never gets a message that a worker
// or another instance is attempting: those are left to their holder.
//
// Which recipients are due is decided when a message is leased, and again,
// against the holds only, when it starts after waiting in its lane: a
// destination that pushes back on one attempt holds back the messages
// leased after it and those still waiting behind it, not the siblings that
// started beside it (whether a sibling had already looked at the holds
// would otherwise be up to the scheduler).
func (q *queueRuntime) round(ctx context.Context, domain string, flush bool) {
	q.drainRound(ctx, domain, flush, nil)
}

// drainRound is round; wake, when not nil, is the worker's wake-up
// channel, which a round waiting for mail to lease listens to as well.
func (q *queueRuntime) drainRound(ctx context.Context, domain string, flush bool, wake <-chan struct{}) {
	conc := q.m.cfg.concurrency()
	d := &drain{
		q:         q,
		ctx:       ctx,
		flush:     flush,
		poked:     wake,
		window:    queueLeaseAhead * conc,
		perLane:   q.m.cfg.maxConnsPerHost(),
		lanes:     make(map[string]*lane),
		signal:    make(chan struct{}, 1),
		running:   make(chan struct{}, conc),
		recording: make(chan struct{}, queueRecordingFactor*conc),
		outcomes:  make(chan *attempt, queueRecordingFactor*conc),
		bg:        context.WithoutCancel(ctx),
	}
	var tried map[string]bool // a flush's: each message once
	if flush {
		tried = make(map[string]bool)
	}
	var batch []leased // reused: dispatch keeps copies of its items
	q.reportStoreQuarantines()
	defer d.finish()
	for {
		max := d.slots()
		if max == 0 {
			return // ctx ended
		}
		now := q.now()
		req := LeaseRequest{Now: now, Max: max, Duration: q.lease}
		if flush {
			req.DueBy = now.Add(100 * 365 * 24 * time.Hour) // whatever the schedule
		}
		msgs, err := q.store.Lease(ctx, req)
		if err != nil {
			q.m.cfg.logger().Error("mailroute: queue: lease", "error", err)
			return
		}
		batch = batch[:0]
		dues := make([]int, 0, len(msgs)) // the batch's due lists, in one array
		for _, qm := range msgs {
			if flush {
				if tried[qm.ID] {
					d.keep(qm)
					continue
				}
				tried[qm.ID] = true
			}
			n := len(dues)
			dues = q.appendDue(dues, qm, now, domain, flush)
			batch = append(batch, leased{qm, dues[n:len(dues):len(dues)]})
		}
		d.dispatch(batch)
		clear(batch)
		if d.afterLease(len(msgs) < max) {
			return // nothing more due, nothing in flight: the round is over
		}
	}
}

// drain is one round's state: its leased messages, by destination.
type drain struct {
	q      *queueRuntime
	ctx    context.Context
	bg     context.Context // ctx without its end: outcomes are recorded whatever happens
	flush  bool
	poked  <-chan struct{} // new mail may be due (Enqueue, QueueNotifier)
	window int             // the most messages leased and not yet delivered
	// perLane is the most goroutines attempting one destination's mail:
	// one per connection it allows (Config.MaxConnsPerHost), like one
	// Send caller per session, so that no session changes hands between
	// transactions.
	perLane int

	mu       sync.Mutex
	inFlight int  // leased, given to a lane, delivery not over
	waiting  int  // of those, not started
	freed    int  // deliveries over since the last lease
	short    bool // the last lease brought fewer messages than asked for
	lanes    map[string]*lane
	held     []*QueuedMessage // leases kept until the round ends
	signal   chan struct{}    // the round may lease again (one pending wake-up)

	// running bounds the attempts in progress: Config.Concurrency.
	running chan struct{}
	// recording bounds the outcomes waiting for the store: see
	// queueRecordingFactor.
	recording chan struct{}
	wg        sync.WaitGroup // runners and their preparers

	// outcomes go from the runners to the recorders, which are started
	// when an outcome comes and none is idle (up to cap(recording)).
	outcomes chan *attempt
	recMu    sync.Mutex
	// recorders started, of them idle (waiting for an outcome), and
	// outcomes sent and not yet taken.
	recorders, idle, unread int
	recWG                   sync.WaitGroup
}

// lane is one destination's leased messages that wait for a runner, in
// lease order, and how many runners it has (up to drain.perLane).
type lane struct {
	key     string
	items   []leased // waiting from items[head]
	head    int
	runners int
}

type leased struct {
	qm  *QueuedMessage
	due []int // indexes into qm.Recipients
}

// laneKey is the lane of a leased message: the domain of its due
// recipients, or a lane of its own when they are in several domains (its
// attempt delivers to them concurrently) or none is due.
func laneKey(qm *QueuedMessage, due []int) string {
	if len(due) == 0 {
		return "\x00" + qm.ID
	}
	key := domainOf(qm.Recipients[due[0]].Rcpt)
	for _, i := range due[1:] {
		if domainOf(qm.Recipients[i].Rcpt) != key {
			return "\x00" + qm.ID
		}
	}
	return key
}

// slots waits until leasing again is worth it and returns how many
// messages to lease, or 0 when ctx ended.
func (d *drain) slots() int {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		d.mu.Lock()
		n := d.ready()
		if n > 0 {
			d.freed = 0
		}
		short := d.short
		d.mu.Unlock()
		if d.ctx.Err() != nil {
			return 0
		}
		if n > 0 {
			return n
		}
		// Mail that becomes due or arrives while the round waits for its
		// last deliveries is leased at the poll interval or when the
		// worker is woken, as between rounds.
		var poll <-chan time.Time
		if short {
			if timer == nil {
				timer = time.NewTimer(d.q.poll)
			}
			poll = timer.C
		}
		select {
		case <-d.signal:
		case <-d.ctx.Done():
			return 0
		case <-poll:
			timer.Reset(d.q.poll)
			if n := d.free(); n > 0 {
				return n
			}
		case <-d.poked:
			if n := d.free(); n > 0 {
				return n
			}
		}
	}
}

// free resets the count of deliveries over and returns how many messages
// the window has room for.
func (d *drain) free() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.freed = 0
	return d.window - d.inFlight
}

// ready is slots' condition, under d.mu: how many messages to lease now,
// or 0 for not yet. At once when nothing is in flight. After a full lease,
// when half the window is free, or when every leased message has started.
// After a short one (the store had no more mail due), when half a
// window's worth of deliveries are over since: their attempts do not make
// more mail due, so leasing after each would only ask the store for
// nothing again.
func (d *drain) ready() int {
	free := d.window - d.inFlight
	switch {
	case d.inFlight == 0:
	case free <= 0:
		return 0
	case d.short:
		if d.freed < max(1, d.window/2) {
			return 0
		}
	case d.waiting > 0 && d.inFlight > d.window/2:
		return 0
	}
	return free
}

// wake tells the round to look at ready again; under d.mu. A spurious
// wake-up costs one check.
func (d *drain) wake() {
	select {
	case d.signal <- struct{}{}:
	default:
	}
}

// afterLease notes whether a lease was short and reports whether the
// round is over: it was, and no leased message is in flight.
func (d *drain) afterLease(short bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.short = short
	return short && d.inFlight == 0
}

// dispatch gives each message of a lease to a new runner of its
// destination's lane while the lane has fewer than perLane, and queues
// the rest there, all at once: which messages start without a second look
// at the holds does not depend on how far the runners have got.
func (d *drain) dispatch(batch []leased) {
	type start struct {
		l  *lane
		it leased
	}
	var few [8]start
	starts := few[:0]
	d.mu.Lock()
	for _, it := range batch {
		key := laneKey(it.qm, it.due)
		d.inFlight++
		d.waiting++
		l := d.lanes[key]
		if l == nil {
			l = &lane{key: key}
			d.lanes[key] = l
		}
		if l.runners < d.perLane {
			l.runners++
			starts = append(starts, start{l, it})
		} else {
			l.push(it)
		}
	}
	d.mu.Unlock()
	for _, s := range starts {
		d.wg.Add(1)
		go d.run(s.l, s.it)
	}
}

// push queues a message at the end of the lane; under d.mu. The array
// is reused: the messages taken move to its start when it is full.
func (l *lane) push(it leased) {
	if len(l.items) == cap(l.items) && l.head > 0 {
		n := copy(l.items, l.items[l.head:])
		clear(l.items[n:])
		l.items, l.head = l.items[:n], 0
	}
	l.items = append(l.items, it)
}

// pop takes the lane's next waiting message; under d.mu.
func (l *lane) pop() (leased, bool) {
	if l.head == len(l.items) {
		return leased{}, false
	}
	it := l.items[l.head]
	l.items[l.head] = leased{}
	l.head++
	if l.head == len(l.items) {
		l.items, l.head = l.items[:0], 0
	}
	return it, true
}

// run delivers it and then the lane's waiting messages, one after the
// other, until the lane is empty; only then does it give up its place in
// the lane. While one message is on the wire the next is prepared beside
// it (state checked, body read back from the store) by the runner's
// preparer, so that the session goes from one transaction to the next
// without waiting for the store.
func (d *drain) run(l *lane, it leased) {
	defer d.wg.Done()
	var pr *preparer // started when a message first waits behind another
	cut := &cutoffs{parent: d.ctx}
	defer func() {
		cut.stop()
		if pr != nil {
			close(pr.in)
		}
	}()
	a := d.prepare(it, false)
	for {
		d.mu.Lock()
		nit, ok := l.pop()
		d.mu.Unlock()
		if ok {
			if pr == nil {
				pr = d.startPreparer()
			}
			pr.in <- nit
		}
		if a != nil {
			d.deliver(a, cut)
		}
		if ok {
			a = <-pr.out
			continue
		}
		// Nothing was waiting when the delivery began; something may
		// have come since.
		d.mu.Lock()
		nit, ok = l.pop()
		if !ok {
			l.runners--
			if l.runners == 0 {
				delete(d.lanes, l.key)
			}
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		a = d.prepare(nit, true)
	}
}

// preparer prepares a runner's next message while the runner delivers:
// one message at a time, handed over on in and back on out.
type preparer struct {
	in  chan leased
	out chan *attempt
}

// startPreparer starts a runner's preparer; it ends when in is closed.
func (d *drain) startPreparer() *preparer {
	pr := &preparer{in: make(chan leased, 1), out: make(chan *attempt, 1)}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for it := range pr.in {
			pr.out <- d.prepare(it, true)
		}
	}()
	return pr
}

// prepare reads a leased message back for its delivery; waited says it
// waited in its lane (see attempt). When there is nothing to deliver it
// disposes of the message (its lease kept until the round ends, or ended
// by a quarantine) and returns nil.
func (d *drain) prepare(it leased, waited bool) *attempt {
	if d.ctx.Err() == nil {
		a, ended := d.q.prepare(d.ctx, d.bg, it.qm, it.due)
		if a != nil {
			a.waited = waited
			return a
		}
		if ended {
			d.done(false)
			return nil
		}
	}
	d.keep(it.qm) // stopping, or nothing to try: released at the end
	d.done(false)
	return nil
}

// deliver delivers a prepared message under a context of cut, holding a place in d.running
// (Concurrency) until the delivery is over, and hands the outcome to a
// recorder, so that the runner goes on while the store makes it durable.
// A message that waited in its lane is checked against the holds again
// first: a destination that pushed back meanwhile keeps it. Once
// queueRecordingFactor×Concurrency outcomes wait for the store, the
// runner waits with them, keeping its place: the store's pace holds the
// deliveries back, and the outcomes kept in memory are bounded.
func (d *drain) deliver(a *attempt, cut *cutoffs) {
	d.running <- struct{}{}
	d.mu.Lock()
	d.waiting--
	if d.ready() > 0 {
		d.wake()
	}
	d.mu.Unlock()
	if a.waited && !d.flush {
		a.due = d.q.notHeld(a.qm, a.due)
	}
	delivered := false
	if len(a.due) > 0 && d.ctx.Err() == nil {
		delivered = d.q.deliver(d.ctx, a, cut)
	} else {
		a.body.Release() // never read
	}
	if !delivered {
		d.keep(a.qm)
		d.done(true)
		return
	}
	d.recording <- struct{}{}
	d.done(true)
	d.record(a)
}

// record hands a delivered attempt to an idle recorder, or to a new one
// when every recorder is busy with an outcome of its own. The place in
// d.recording taken for it guarantees room in d.outcomes.
func (d *drain) record(a *attempt) {
	d.recMu.Lock()
	d.unread++
	start := d.unread > d.idle && d.recorders < cap(d.outcomes)
	if start {
		d.recorders++
		d.idle++
	}
	d.recMu.Unlock()
	if start {
		d.recWG.Add(1)
		go d.recorder()
	}
	d.outcomes <- a
}

// recorder saves outcomes until the round's runners are over.
func (d *drain) recorder() {
	defer d.recWG.Done()
	for a := range d.outcomes {
		d.recMu.Lock()
		d.unread--
		d.idle--
		d.recMu.Unlock()
		a.save()
		<-d.recording
		d.recMu.Lock()
		d.idle++
		d.recMu.Unlock()
	}
}

// done ends a leased message's turn: its place in the lease window is
// free, and its place among the deliveries running when it held one
// (else it never started).
func (d *drain) done(running bool) {
	if running {
		<-d.running
	}
	d.mu.Lock()
	d.inFlight--
	if !running {
		d.waiting--
	}
	d.freed++
	if d.ready() > 0 {
		d.wake()
	}
	d.mu.Unlock()
}

// keep holds a message's lease until the round ends.
func (d *drain) keep(qm *QueuedMessage) {
	d.mu.Lock()
	d.held = append(d.held, qm)
	d.mu.Unlock()
}

// finish waits for the round's attempts and recordings, then ends the
// leases kept.
func (d *drain) finish() {
	d.wg.Wait() // no outcome comes after the runners
	close(d.outcomes)
	d.recWG.Wait()
	for _, qm := range d.held {
		if err := d.q.store.Release(context.WithoutCancel(d.ctx), qm.ID, qm.Lease); err != nil {
			d.q.m.cfg.logger().Error("mailroute: queue: release", "id", qm.ID, "error", err)
		}
	}
}
