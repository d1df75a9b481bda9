package mailroute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/mailroute/go-mailroute/internal/message"
	"github.com/mailroute/go-mailroute/internal/mx"
)

// Send delivers msg from one sender to every recipient, each the way the
// Router decides, and reports what happened to each.
//
// from is the envelope sender (the reverse-path): an address, or "" (or
// "<>") for the null sender of bounces. to are the envelope recipients;
// duplicates are sent once. Addresses are bare ("user@example.com"; one
// enclosing pair of angle brackets is tolerated) and are checked against the
// RFC 5321 grammar before anything is sent: a malformed one makes Send fail
// with an error naming it and nothing is sent to anyone. Unicode domains go
// out as A-labels; a non-ASCII local part needs a server offering SMTPUTF8.
//
// msg is the whole message, headers and body, read once. Its line endings
// are canonicalised to CRLF (a bare CR or LF each becomes CRLF, a final CRLF
// is ensured) so that no byte sequence inside it can end the SMTP DATA phase
// early, whatever the receiving server's parser does (SMTP smuggling); a NUL
// or a line over 998 octets is refused.
//
// Recipients are grouped by domain; each domain is routed once and the
// domains are delivered concurrently (Config.Concurrency).
//
// The Result is never nil: it has one entry per distinct recipient,
// whatever happened, even when Send stopped before sending anything (a
// malformed address: that recipient Failed, the others Deferred with
// ErrNotAttempted). The error is nil exactly when every recipient was
// delivered or queued; otherwise it is a *SendError naming who got the
// message and who did not.
func (m *Mailer) Send(ctx context.Context, from string, to []string, msg io.Reader) (*Result, error) {
	return m.send(ctx, from, to, msg, m.relay)
}

// send is Send with the relay to use for this call (nil: none).
func (m *Mailer) send(ctx context.Context, from string, to []string, msg io.Reader, relay *smarthost) (*Result, error) {
	call := new(sendCall)
	sctx := m.sends.enter(ctx, &call.ctx)
	if sctx == nil {
		return refused(to, ErrClosed, -1, false)
	}
	defer m.sends.leave(sctx)
	ctx = sctx
	sc := sendScratchPool.Get().(*sendScratch)
	defer sc.release()
	env, bad, err := parseEnvelopeWith(&m.addrs, from, to, &sc.env)
	if err != nil {
		return refused(to, err, bad, true)
	}
	body, err := m.readBody(msg)
	if err != nil {
		// A message that cannot be read or canonicalised, or is too
		// large, will not go through on a retry either.
		return refused(to, err, -1, true)
	}
	// Once every delivery is done with the body (runJobs waits for them
	// all), its memory serves the next Send; but not after a queue store
	// was handed a reader over it, in case the store keeps the reader.
	handedOver := false
	defer func() {
		if handedOver {
			body.Close()
		} else {
			body.Release()
		}
	}()

	res := newResult(len(env.rcpts))
	jobs := m.groupEnv(&env, body, res, &sc.job, &call.dest)
	for _, j := range jobs {
		j.relay = relay
	}
	m.runJobs(ctx, jobs)
	if m.queue != nil {
		handedOver = true
		m.queue.enqueueDeferred(ctx, env.from, res, body)
	} else {
		m.reportFirstAttempt(res)
	}
	return res, res.Err()
}

// sendCall is what one Send allocates, besides its Result: its context
// and its first Destination, which code handed them (a Router, a
// Resolver) may keep after the Send, so they are never reused.
type sendCall struct {
	ctx  sendCtx
	dest Destination
}

// sendScratch is the rest of a Send's state: the lists of a single
// recipient and its first job, which nothing outside the Send ever sees
// (a job's Destination is sendCall's). It is reused Send after Send, so
// that a message costs about 300 octets of garbage instead of 1.4 KiB,
// and the collector runs a quarter as often.
type sendScratch struct {
	env envOne
	job job
}

var sendScratchPool = sync.Pool{New: func() any { return new(sendScratch) }}

// release zeroes sc, dropping every reference the Send left in it, and
// hands it back. The Send is over: runJobs waited for every delivery.
func (sc *sendScratch) release() {
	*sc = sendScratch{}
	sendScratchPool.Put(sc)
}

// envOne backs an envelope's lists for a single recipient.
type envOne struct {
	a [1]message.Address
	s [1]string
}

// newResult returns a Result for n recipients; for one, the common case,
// in a single allocation.
func newResult(n int) *Result {
	if n == 1 {
		one := new(struct {
			res Result
			r   [1]RecipientResult
		})
		one.res.Recipients = one.r[:]
		return &one.res
	}
	return &Result{Recipients: make([]RecipientResult, n)}
}

// refused returns the Result and error of a Send that stopped before
// delivering to anyone.
func refused(to []string, cause error, bad int, permanent bool) (*Result, error) {
	res := refusedResult(to, cause, bad, permanent)
	if len(res.Recipients) == 0 {
		// No recipients at all: nobody to name in a Result.
		return res, cause
	}
	return res, res.Err()
}

// envelope is a checked sender and recipient list.
type envelope struct {
	from     string // reverse-path as on the wire; "" = <>
	fromUTF8 bool
	rcpts    []message.Address // duplicates removed
	strs     []string          // rcpts[i] as on the wire
}

// dedupLinear is the recipient count up to which duplicates are found by
// comparing with those before, not with a map: cheaper for the few
// recipients of most Sends, and no allocation.
const dedupLinear = 8

// parseEnvelope checks every address before anything is sent: one
// malformed address fails the whole call. On error, bad is the index in to
// of the malformed recipient, or -1 when the sender is.
func parseEnvelope(from string, to []string) (env envelope, bad int, err error) {
	return parseEnvelopeWith(nil, from, to, nil)
}

// parseEnvelopeWith is parseEnvelope with the addresses remembered in
// memo (nil: none), and the lists of a single recipient in one (nil: one
// allocated).
func parseEnvelopeWith(memo *message.AddressMemo, from string, to []string, one *envOne) (env envelope, bad int, err error) {
	var sender message.Address
	null := from == "" || from == "<>"
	if !null {
		sender, err = parseAddr(memo, from)
	}
	if err != nil {
		return envelope{}, -1, fmt.Errorf("sender: %w", err)
	}
	if len(to) == 0 {
		return envelope{}, -1, ErrNoRecipients
	}
	env = envelope{fromUTF8: sender.UTF8}
	if len(to) == 1 {
		// Most Sends have one recipient: both lists in one array each.
		if one == nil {
			one = new(envOne)
		}
		env.rcpts, env.strs = one.a[:0], one.s[:0]
	} else {
		env.rcpts, env.strs = make([]message.Address, 0, len(to)), make([]string, 0, len(to))
	}
	if !null {
		env.from = sender.StringFrom(from)
	}
	var seen map[string]bool
	if len(to) > dedupLinear {
		seen = make(map[string]bool, len(to))
	}
	for i, s := range to {
		a, err := parseAddr(memo, s)
		if err != nil {
			return envelope{}, i, fmt.Errorf("recipient: %w", err)
		}
		key := a.StringFrom(s)
		if seen != nil {
			if seen[key] {
				continue
			}
			seen[key] = true
		} else if slices.Contains(env.strs, key) {
			continue
		}
		env.rcpts = append(env.rcpts, a)
		env.strs = append(env.strs, key)
	}
	return env, -1, nil
}

// parseAddr parses s through memo, when there is one.
func parseAddr(memo *message.AddressMemo, s string) (message.Address, error) {
	if memo != nil {
		return memo.Parse(s)
	}
	return message.ParseAddress(s)
}

// ErrNoRecipients is the error of a Send given no recipients.
var ErrNoRecipients = errors.New("mailroute: no recipients")

// readBody canonicalises the message and prepares it (headers, DKIM)
// once, for every route. The caller closes the result.
func (m *Mailer) readBody(msg io.Reader) (*message.Body, error) {
	if msg == nil {
		return nil, errors.New("nil message")
	}
	body, err := message.NewBody(msg, message.BodyOptions{MaxSize: m.cfg.MaxMessageSize})
	if err != nil {
		return nil, err
	}
	prepared, err := m.prepareBody(body)
	if err != nil {
		body.Close()
		return nil, fmt.Errorf("preparing the message: %w", err)
	}
	if prepared != body {
		body.Release() // prepared holds a copy
	}
	return prepared, nil
}

// runJobs delivers the jobs, Config.Concurrency at a time. A single job
// runs on the caller's goroutine: most Sends have one destination, and a
// goroutine per message costs more than the rest of the bookkeeping.
func (m *Mailer) runJobs(ctx context.Context, jobs []*job) {
	// The REQUIRETLS mark comes with the context, a Send's or a queued
	// attempt's alike, so both go through the same checks.
	if requiresTLS(ctx) {
		for _, j := range jobs {
			j.requireTLS = true
		}
	}
	if len(jobs) == 1 {
		m.deliver(ctx, jobs[0])
		return
	}
	sem := make(chan struct{}, m.cfg.concurrency())
	var wg sync.WaitGroup
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			m.deliver(ctx, j)
		}()
	}
	wg.Wait()
}

// group makes one job per destination domain for recipients already
// checked (the queue's), in the order the domains first appear, and fills
// each recipient's Rcpt.
func (m *Mailer) group(from string, fromUTF8 bool, rcpts []message.Address, body *message.Body, res *Result) []*job {
	env := envelope{from: from, fromUTF8: fromUTF8, rcpts: rcpts, strs: make([]string, len(rcpts))}
	for i, a := range rcpts {
		env.strs[i] = a.String()
	}
	return m.groupEnv(&env, body, res, nil, nil)
}

// groupEnv is group for a Send's envelope, whose addresses are already
// strings. first, when not nil, is the zero job to use for the first
// domain, with firstDest its Destination.
func (m *Mailer) groupEnv(env *envelope, body *message.Body, res *Result, first *job, firstDest *Destination) []*job {
	var jobs []*job
	var byDomain map[string]*job
	if len(env.rcpts) > dedupLinear {
		byDomain = make(map[string]*job)
	}
	for i, a := range env.rcpts {
		res.Recipients[i].Rcpt = env.strs[i]
		var j *job
		if byDomain != nil {
			j = byDomain[a.Domain]
		} else {
			for _, o := range jobs {
				if o.dest.Domain == a.Domain {
					j = o
					break
				}
			}
		}
		if j == nil {
			if first != nil {
				j, first = first, nil // zero: its fields are set one by one, not copied whole
				j.dest = firstDest
			} else {
				j = new(job)
				j.dest = &j.destVal
			}
			*j.dest = Destination{Domain: a.Domain, Literal: a.Literal, cache: m.mx}
			j.from, j.utf8, j.body, j.result = env.from, env.fromUTF8, body, res
			j.txRcpts = j.oneTxRcpt[:0]
			j.txRes.Rcpts, j.txRes.Accepted = j.oneRcptRes[:0], j.oneAccepted[:0]
			// The first recipient goes in the job's own arrays: a job
			// with one recipient, the common case, costs no more.
			j.rcpts, j.index = j.oneRcpt[:0], j.oneIndex[:0]
			if byDomain != nil {
				byDomain[a.Domain] = j
			}
			if jobs == nil {
				jobs = j.jobsOf1[:0]
			}
			jobs = append(jobs, j)
		}
		j.rcpts = append(j.rcpts, a)
		j.index = append(j.index, i)
	}
	return jobs
}

// deliver routes one destination and hands it to the chosen transport. A
// job the queue marked for the relay skips routing.
func (m *Mailer) deliver(ctx context.Context, j *job) {
	start := time.Now()
	defer func() { m.figures.record(ctx, j, m.providerOf(j.dest), time.Since(start)) }()
	if j.forceRelay {
		// The queue's fallback over time: the relay is still the one the
		// destination's route names, when it can be routed.
		route, err := m.route(ctx, j.dest)
		if err != nil {
			route = Route{}
		}
		if e := m.pickRelay(j, route); e != nil {
			j.failAll(e, "")
			return
		}
		if j.relay != nil {
			m.deliverSmarthost(ctx, j)
			for k := range j.rcpts {
				j.slot(k).Fallback = true
			}
			return
		}
		// No relay for this sender and destination after all (only named
		// relays exist, and none applies): go on direct.
		j.forceRelay = false
	}
	route, err := m.route(ctx, j.dest)
	if err != nil {
		j.failAll(routeError(err), "")
		return
	}
	j.route = route
	if e := m.pickRelay(j, route); e != nil {
		j.failAll(e, "")
		return
	}
	learn := m.learn.active(j)
	var site string
	var probe bool
	if learn && route.Via == Direct {
		route, site, probe = m.learn.route(ctx, j)
		j.route = route
	}
	if route.Via == Relayed {
		m.deliverSmarthost(ctx, j)
		return
	}
	m.deliverDirect(ctx, j)
	if learn {
		m.learn.observe(ctx, j, site, probe)
	}
	if j.relay != nil {
		m.fallback(ctx, j)
	}
	if learn {
		m.learn.blocked.observe(ctx, j, site)
	}
}

// fallback re-sends through the relay the recipients whose direct
// failure the policy says the relay can fix. Their results then describe
// the relay attempt, with Fallback set and the direct failure in DirectErr.
func (m *Mailer) fallback(ctx context.Context, j *job) {
	var retry []int
	for k := range j.rcpts {
		r := j.slot(k)
		if r.Status != Delivered && m.cfg.Fallback.ShouldFallback(r.Err) {
			retry = append(retry, k)
		}
	}
	if len(retry) == 0 {
		return
	}
	directErrs := make([]error, len(retry))
	for i, k := range retry {
		directErrs[i] = j.slot(k).Err
	}
	sub := &job{
		dest: j.dest, route: j.route, from: j.from, utf8: j.utf8, body: j.body,
		relay: j.relay, result: j.result, requireTLS: j.requireTLS, noTLSReq: j.noTLSReq,
	}
	for _, k := range retry {
		sub.rcpts = append(sub.rcpts, j.rcpts[k])
		sub.index = append(sub.index, j.index[k])
	}
	m.deliverSmarthost(ctx, sub)
	for i := range retry {
		r := sub.slot(i)
		r.Fallback = true
		r.DirectErr = directErrs[i]
		if r.Err != nil {
			r.Err = &fallbackError{relay: r.Err, direct: directErrs[i]}
		}
	}
}

// routeError turns a routing failure into the recipients' error: a DNS
// failure keeps its class, anything else (no rule matched, a router's own
// error) is a configuration problem that a later attempt may not fix but
// that must not bounce mail either, so it is temporary.
func routeError(err error) *Error {
	var me *mx.Error
	if errors.As(err, &me) {
		return fromDNS(err)
	}
	return &Error{Command: "route", Err: err}
}
