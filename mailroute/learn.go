package mailroute

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Learning configures the routes a Mailer learns from what receivers tell
// it. When a destination refuses the sending address for policy or
// reputation (ClassPolicy: "blocked using zen.spamhaus.org", Microsoft's
// S3150), the Mailer remembers it for the destination's MX site — every
// domain whose MX hosts are the same set shares the verdict, as KumoMTA's
// "site name" does — and for TTL sends mail to any domain of that site
// through the relay without a direct attempt. After TTL one message
// probes direct again: delivered, the lesson is forgotten; refused again,
// it is renewed. Lessons live in the queue's store when it keeps state
// (the spool and River stores), so a restart and every instance share them,
// and in memory otherwise. Nothing is learned or applied without a
// relay.
type Learning struct {
	// Off turns learning off: no lesson is learned or applied, and
	// neither is the blocked-port-25 detector.
	Off bool
	// TTL is how long a lesson holds before direct delivery is probed
	// again. 0: 72 hours.
	TTL time.Duration
	// BlockedPort25 configures the detector of a host that cannot connect
	// out on port 25; see BlockedPort25.
	BlockedPort25 BlockedPort25
}

func (l Learning) ttl() time.Duration {
	if l.TTL > 0 {
		return l.TTL
	}
	return 72 * time.Hour
}

// Lesson is a route learned from a refusal: while it holds, mail to its
// site goes through the relay.
type Lesson struct {
	// Site is the MX site: the MX host names of the destination, sorted
	// and joined by ",", e.g. "mx1.example.net,mx2.example.net". "*" is
	// every direct destination (outbound port 25 blocked).
	Site string `json:"site"`
	// Domain is the domain whose mail taught it.
	Domain string `json:"domain"`
	// Host is the server that refused.
	Host string `json:"host,omitempty"`
	// Reply is the refusal as the server gave it, or the evidence of a
	// blocked port.
	Reply string `json:"reply"`
	// Verdict is the classifier's explanation, e.g.
	// `policy: "blocked using zen.spamhaus.org"`.
	Verdict string `json:"verdict"`
	// Learned is when it was learned or last renewed.
	Learned time.Time `json:"learned"`
	// Until is when direct delivery is probed again.
	Until time.Time `json:"until"`
	// ProbeUntil, when after Until, is the end of a probe in progress:
	// one message is trying direct, the others keep using the relay.
	ProbeUntil time.Time `json:"probe_until,omitzero"`
}

// String is the lesson as evidence, for a Route's Reason.
func (l Lesson) String() string {
	if l.Site == siteAll {
		return fmt.Sprintf("outbound port 25 appears blocked: %s (since %s); via the relay until %s",
			l.Reply, l.Learned.UTC().Format(time.RFC3339), l.Until.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("learned: MX site %s refused direct delivery to %s at %s (%s; %s); via the relay until %s",
		l.Site, l.Domain, l.Learned.UTC().Format(time.RFC3339), l.Verdict, l.Reply, l.Until.UTC().Format(time.RFC3339))
}

// State namespaces and keys of the learner.
const (
	lessonNS = "route"
	siteAll  = "*"
	// probeWindow is how long one probe holds the site before another
	// message may try: longer than an attempt takes.
	probeWindow = 10 * time.Minute
)

// learner applies and learns lessons for one Mailer.
type learner struct {
	m     *Mailer
	store StateStore
	now   func() time.Time
	cfg   Learning
	log   *slog.Logger

	mu      sync.Mutex
	probing map[string]time.Time // sites this instance is probing, until when
	blocked *portWatch
}

func newLearner(m *Mailer) *learner {
	l := &learner{m: m, cfg: m.cfg.Learning, now: time.Now, log: m.cfg.logger(), probing: make(map[string]time.Time)}
	if m.cfg.now != nil {
		l.now = m.cfg.now
	}
	l.store = m.state
	l.blocked = newPortWatch(l)
	return l
}

// active reports whether lessons are learned and applied for a job.
func (l *learner) active(j *job) bool {
	return l != nil && !l.cfg.Off && j.relay != nil && !j.dest.IsLiteral()
}

// siteOf returns the MX site of a destination: its MX host names, lower
// case, sorted, joined by ",". A key longer than a StateStore allows is
// shortened to a hash.
func siteOf(hosts []*net.MX) string {
	names := make([]string, 0, len(hosts))
	for _, h := range hosts {
		names = append(names, strings.TrimSuffix(strings.ToLower(h.Host), "."))
	}
	sort.Strings(names)
	names = slices.Compact(names)
	return strings.Join(names, ",")
}

func siteKey(site string) string {
	if len(site) <= 255 {
		return site
	}
	h := sha256.Sum256([]byte(site))
	return "sha256:" + hex.EncodeToString(h[:])
}

// lessonFor returns the lesson that holds for a site, if any, and whether
// this message is to probe direct instead. A store failure applies no
// lesson: the mail goes the way the router said.
func (l *learner) lessonFor(ctx context.Context, site string) (Lesson, bool, bool) {
	data, ok, err := l.store.GetState(ctx, lessonNS, siteKey(site), l.now())
	if err != nil {
		l.log.WarnContext(ctx, "mailroute: reading learned routes failed; routing as configured", "site", site, "error", err)
		return Lesson{}, false, false
	}
	if !ok {
		return Lesson{}, false, false
	}
	var les Lesson
	if err := json.Unmarshal(data, &les); err != nil {
		return Lesson{}, false, false
	}
	now := l.now()
	if now.Before(les.Until) || now.Before(les.ProbeUntil) {
		return les, true, false
	}
	// The lesson's time is up: this message probes, the others keep the
	// relay until the probe ends.
	l.mu.Lock()
	if now.Before(l.probing[site]) {
		l.mu.Unlock()
		return les, true, false
	}
	l.probing[site] = now.Add(probeWindow)
	l.mu.Unlock()
	les.ProbeUntil = now.Add(probeWindow)
	l.put(ctx, les)
	return les, false, true
}

func (l *learner) put(ctx context.Context, les Lesson) {
	data, _ := json.Marshal(les)
	// Kept past Until by one more TTL, so the probe finds it and a renewal
	// keeps its history; a lesson nobody probes goes away by itself.
	exp := les.Until.Add(l.cfg.ttl())
	if les.ProbeUntil.After(exp) {
		exp = les.ProbeUntil
	}
	if err := l.store.PutState(ctx, lessonNS, siteKey(les.Site), data, exp); err != nil {
		l.log.WarnContext(ctx, "mailroute: storing a learned route failed", "site", les.Site, "error", err)
	}
}

// route applies a lesson to a destination the router sent direct. It
// returns the route to take and whether this delivery is a probe of an
// expired lesson (its site is then returned for observe).
func (l *learner) route(ctx context.Context, j *job) (Route, string, bool) {
	blocked, held, probe25 := l.blocked.holds()
	if held {
		return Route{Via: Relayed, Reason: blocked.String()}, "", false
	}
	hosts, err := j.dest.MX(ctx)
	if err != nil || len(hosts) == 0 {
		return j.route, "", false
	}
	site := siteOf(hosts)
	if probe25 {
		r := j.route
		r.Reason += fmt.Sprintf("; probing direct: outbound port 25 was found blocked until %s", blocked.Until.UTC().Format(time.RFC3339))
		return r, site, false
	}
	les, ok, probe := l.lessonFor(ctx, site)
	switch {
	case ok:
		return Route{Via: Relayed, Reason: les.String()}, site, false
	case probe:
		r := j.route
		r.Reason += fmt.Sprintf("; probing direct: the lesson for MX site %s expired at %s", site, les.Until.UTC().Format(time.RFC3339))
		return r, site, true
	}
	return j.route, site, false
}

// observe learns from a direct attempt: a policy refusal from a server
// teaches (or renews) a lesson for the site; a delivery during a probe
// forgets it.
func (l *learner) observe(ctx context.Context, j *job, site string, probe bool) {
	if probe {
		defer func() {
			l.mu.Lock()
			delete(l.probing, site)
			l.mu.Unlock()
		}()
	}
	if site == "" {
		return
	}
	var refusal *Error
	delivered := false
	for k := range j.rcpts {
		r := j.slot(k)
		if r.Status == Delivered {
			delivered = true
			continue
		}
		var e *Error
		if refusal == nil && errors.As(r.Err, &e) && e.Code != 0 && Classify(e) == ClassPolicy {
			refusal = e
		}
	}
	switch {
	case refusal != nil:
		now := l.now()
		les := Lesson{
			Site: site, Domain: j.dest.Domain, Host: refusal.Host,
			Reply:   replyText(refusal),
			Verdict: Explain(refusal).String(),
			Learned: now, Until: now.Add(l.cfg.ttl()),
		}
		l.put(ctx, les)
		verb := "learned"
		if probe {
			verb = "renewed"
		}
		l.log.WarnContext(ctx, "mailroute: "+verb+" a route: mail to this MX site goes through the relay",
			"site", site, "domain", j.dest.Domain, "host", refusal.Host, "verdict", les.Verdict,
			"reply", les.Reply, "until", les.Until)
	case probe && delivered:
		if err := l.store.DeleteState(ctx, lessonNS, siteKey(site)); err != nil {
			l.log.WarnContext(ctx, "mailroute: forgetting a learned route failed", "site", site, "error", err)
		}
		l.log.InfoContext(ctx, "mailroute: direct delivery works again; learned route forgotten", "site", site, "domain", j.dest.Domain)
	}
}

// replyText is an SMTP reply as one line: "550 5.7.1 text".
func replyText(e *Error) string {
	s := fmt.Sprint(e.Code)
	if ec := e.Enhanced.String(); ec != "" {
		s += " " + ec
	}
	if e.Message != "" {
		s += " " + strings.ReplaceAll(e.Message, "\n", " / ")
	}
	return s
}

// Lessons returns the routes the Mailer has learned and that still hold
// or await their probe, by site.
func (m *Mailer) Lessons(ctx context.Context) ([]Lesson, error) {
	all, err := m.learn.store.ListState(ctx, lessonNS, m.learn.now())
	if err != nil {
		return nil, err
	}
	out := make([]Lesson, 0, len(all))
	for _, data := range all {
		var les Lesson
		if json.Unmarshal(data, &les) == nil {
			out = append(out, les)
		}
	}
	if les, ok := m.learn.blocked.lesson(); ok {
		out = append(out, les)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Site < out[b].Site })
	return out, nil
}

// Forget removes the lesson for a site (as Lesson.Site gives it, "*" for a
// blocked port 25), or for the MX site of a domain or an address; mail
// there goes the way the Router says again. Forgetting what was not
// learned is not an error.
func (m *Mailer) Forget(ctx context.Context, siteOrDomain string) error {
	site := siteOrDomain
	if site == siteAll {
		m.learn.blocked.forget()
		return nil
	}
	if !strings.Contains(site, ",") {
		if d, err := m.Destination(siteOrDomain); err == nil && !d.IsLiteral() {
			if hosts, err := d.MX(ctx); err == nil && len(hosts) > 0 {
				site = siteOf(hosts)
			}
		}
	}
	return m.learn.store.DeleteState(ctx, lessonNS, siteKey(site))
}

// dryRun is Route's view of the lessons: the route mail to domain would
// take now, without claiming a probe.
func (l *learner) dryRun(ctx context.Context, domain string, r Route) Route {
	if les, ok := l.blocked.lesson(); ok && l.now().Before(les.Until) {
		return Route{Via: Relayed, Reason: les.String()}
	}
	d, err := l.m.destination(domain)
	if err != nil || d.IsLiteral() {
		return r
	}
	hosts, err := d.MX(ctx)
	if err != nil || len(hosts) == 0 {
		return r
	}
	data, ok, err := l.store.GetState(ctx, lessonNS, siteKey(siteOf(hosts)), l.now())
	var les Lesson
	if err != nil || !ok || json.Unmarshal(data, &les) != nil {
		return r
	}
	if l.now().Before(les.Until) {
		return Route{Via: Relayed, Reason: les.String()}
	}
	r.Reason += "; the next message probes direct: " + les.String()
	return r
}

// withLessons gives a dry run's decision the lessons that apply.
func (m *Mailer) withLessons(ctx context.Context, domain string, r Route, err error) (Route, error) {
	if err != nil || r.Via != Direct || m.relay == nil || m.cfg.Learning.Off {
		return r, err
	}
	return m.learn.dryRun(ctx, domain, r), nil
}
