package mailroute

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// BlockedPort25 configures the detector of a host that cannot connect out
// on port 25, as on most cloud providers' defaults and many residential
// ISPs. When direct connections to Sites distinct MX sites fail at connect
// (timeout, refused, unreachable) within Window, no direct connection
// succeeds meanwhile, and the relay delivers, the Mailer concludes
// that outbound port 25 is blocked: it logs the evidence once, at Error,
// and sends all direct mail through the relay for Hold. Then one
// message probes direct again: a server answering ends the block, another
// connect failure renews it. The verdict is this host's, so it is kept in
// memory, not in the shared store; Lessons lists it with Site "*", Forget("*")
// ends it, and the doctor package's CheckMailer reports it.
type BlockedPort25 struct {
	// Sites is how many distinct MX sites must fail at connect. 0: 3.
	Sites int
	// Window is how close together the failures must be. 0: 10 minutes.
	Window time.Duration
	// Hold is how long all direct mail goes through the relay before
	// a probe. 0: 1 hour.
	Hold time.Duration
}

func (b BlockedPort25) sites() int {
	if b.Sites > 0 {
		return b.Sites
	}
	return 3
}

func (b BlockedPort25) window() time.Duration {
	if b.Window > 0 {
		return b.Window
	}
	return 10 * time.Minute
}

func (b BlockedPort25) hold() time.Duration {
	if b.Hold > 0 {
		return b.Hold
	}
	return time.Hour
}

// portWatch is the detector's state.
type portWatch struct {
	l *learner

	mu       sync.Mutex
	failures map[string]connectFail // site → its latest connect failure
	directOK time.Time              // the last time a direct server answered
	relayOK  time.Time              // the last time the relay delivered
	verdict  *Lesson                // the conclusion, while it holds
	// probing is the end of the probe in progress, if any: one message
	// goes direct, the rest keep the relay. A probe that never reports
	// (its destination had no MX) ends by itself.
	probing time.Time
}

type connectFail struct {
	at   time.Time
	how  string // "timeout", "refused", "unreachable"
	host string
}

func newPortWatch(l *learner) *portWatch {
	return &portWatch{l: l, failures: make(map[string]connectFail)}
}

// holds reports whether all direct mail goes through the relay now,
// and whether the caller is the probe: at the end of the hold, the first
// caller is let through.
func (w *portWatch) holds() (les Lesson, held, probe bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.verdict == nil {
		return Lesson{}, false, false
	}
	now := w.l.now()
	if now.Before(w.verdict.Until) || now.Before(w.probing) {
		return *w.verdict, true, false
	}
	w.probing = now.Add(probeWindow)
	return *w.verdict, false, true
}

// lesson returns the verdict, if one holds.
func (w *portWatch) lesson() (Lesson, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.verdict == nil {
		return Lesson{}, false
	}
	return *w.verdict, true
}

func (w *portWatch) forget() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.verdict, w.probing = nil, time.Time{}
	clear(w.failures)
}

// observe records what a direct attempt (and its fallback) showed about
// port 25.
func (w *portWatch) observe(ctx context.Context, j *job, site string) {
	if site == "" {
		return
	}
	answered, relayed := false, false
	var fail *connectFail
	for k := range j.rcpts {
		r := j.slot(k)
		directErr := r.Err
		switch {
		case r.Fallback:
			directErr = r.DirectErr
			relayed = relayed || r.Status == Delivered
		case r.Status == Delivered:
			answered = true
			continue
		}
		e, ok := asError(directErr)
		switch {
		case !ok:
		case e.Code != 0:
			answered = true
		case fail == nil:
			if how := connectFailure(e); how != "" {
				fail = &connectFail{how: how, host: e.Host}
			}
		}
	}
	now := w.l.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if relayed {
		w.relayOK = now
	}
	switch {
	case answered:
		w.directOK = now
		clear(w.failures)
		if w.verdict != nil {
			w.verdict, w.probing = nil, time.Time{}
			w.l.log.InfoContext(ctx, "mailroute: outbound port 25 works again; direct delivery resumes", "domain", j.dest.Domain)
		}
	case fail != nil:
		fail.at = now
		w.failures[site] = *fail
		if w.verdict != nil {
			w.verdict.Until = now.Add(w.l.cfg.BlockedPort25.hold())
			w.verdict.Learned = now
			w.probing = time.Time{}
			w.l.log.InfoContext(ctx, "mailroute: outbound port 25 still blocked; direct mail keeps going through the relay",
				"probe", j.dest.Domain, "until", w.verdict.Until)
			return
		}
		if w.verdict == nil {
			w.conclude(ctx, now)
		}
	}
}

// conclude decides, with w.mu held, whether the failures seen say port 25
// is blocked.
func (w *portWatch) conclude(ctx context.Context, now time.Time) {
	cfg := w.l.cfg.BlockedPort25
	since := now.Add(-cfg.window())
	if w.directOK.After(since) || !w.relayOK.After(since) {
		return // a direct server answered lately, or the relay has not shown it works
	}
	var sites []string
	for s, f := range w.failures {
		if f.at.After(since) {
			sites = append(sites, s)
		} else {
			delete(w.failures, s)
		}
	}
	if len(sites) < cfg.sites() {
		return
	}
	sort.Strings(sites)
	parts := make([]string, len(sites))
	for i, s := range sites {
		f := w.failures[s]
		parts[i] = fmt.Sprintf("%s %s", f.host, f.how)
	}
	les := Lesson{
		Site:    siteAll,
		Reply:   fmt.Sprintf("connections to %d MX sites failed within %v (%s) while the relay delivered", len(sites), cfg.window(), strings.Join(parts, ", ")),
		Verdict: "connection",
		Learned: now,
		Until:   now.Add(cfg.hold()),
	}
	w.verdict = &les
	w.l.log.ErrorContext(ctx, "mailroute: outbound port 25 appears blocked; sending all direct mail through the relay",
		"evidence", les.Reply, "until", les.Until)
}

// asError returns err's *Error.
func asError(err error) (*Error, bool) {
	var e *Error
	if err == nil {
		return nil, false
	}
	ok := errors.As(err, &e)
	return e, ok
}
