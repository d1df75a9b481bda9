package mailroute

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// spamhausBlock refuses every recipient the way Postfix refuses a client
// on Spamhaus ZEN, unless open says the block was lifted.
func spamhausBlock(open *bool) func(string) *smtp.SMTPError {
	return func(string) *smtp.SMTPError {
		if open != nil && *open {
			return nil
		}
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: "Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/127.0.0.1"}
	}
}

// learnWorld: two domains on one MX host (one site), a third on another,
// and a relay.
type learnWorld struct {
	*directWorld
	site, other *smtptest.Server
	relay       *relayWorld
	clock       *fakeClock
	open        bool // the site's block is lifted
}

func newLearnWorld(t *testing.T) *learnWorld {
	w := &learnWorld{directWorld: newDirectWorld(t), clock: newFakeClock()}
	w.site = w.mx("mx.shared.test", "127.0.0.1", smtptest.Options{RcptPolicy: spamhausBlock(&w.open)})
	w.other = w.mx("mx.other.test", "127.0.0.2", smtptest.Options{})
	w.dns.MX("one.test", "mx.shared.test")
	w.dns.MX("two.test", "mx.shared.test")
	w.dns.MX("three.test", "mx.other.test")
	w.relay = newRelay(t, smtptest.Options{})
	return w
}

func (w *learnWorld) mailer(cfg Config) *Mailer {
	cfg.Relay = w.relay.relay()
	cfg.now = w.clock.Now
	return w.directWorld.mailer(cfg)
}

func relayedCount(r *relayWorld) int { return len(r.s.Messages()) }

// sawRcpt reports whether a server was ever given a recipient.
func sawRcpt(s *smtptest.Server, rcpt string) bool {
	return strings.Contains(strings.ToLower(string(s.Transcript())), "rcpt to:<"+rcpt+">")
}

func TestLearnedRouteSharedBySite(t *testing.T) {
	w := newLearnWorld(t)
	m := w.mailer(Config{})
	ctx := context.Background()

	res, _ := send(t, m, "a@sender.test", []string{"x@one.test"}, testBody)
	r := wantStatus(t, res, "x@one.test", Delivered)
	if !r.Fallback || r.Via != Relayed {
		t.Fatalf("the refused recipient did not fall back: %+v", r)
	}
	conns := w.site.Connections()

	// Another domain on the same MX host: straight to the relay, the MX
	// never hears of it.
	res, err := send(t, m, "a@sender.test", []string{"y@two.test"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	r = wantStatus(t, res, "y@two.test", Delivered)
	if r.Via != Relayed || r.Fallback || !strings.Contains(r.Route.Reason, "learned: MX site mx.shared.test refused") {
		t.Errorf("second domain: %+v", r)
	}
	if n := w.site.Connections(); n != conns || sawRcpt(w.site, "y@two.test") {
		t.Errorf("the refusing MX got %d more connections, or the recipient", n-conns)
	}
	if n := relayedCount(w.relay); n != 2 {
		t.Errorf("the relay has %d messages, want 2", n)
	}

	// A domain on another site is not affected.
	res, _ = send(t, m, "a@sender.test", []string{"z@three.test"}, testBody)
	if r := wantStatus(t, res, "z@three.test", Delivered); r.Via != Direct {
		t.Errorf("another site: %+v", r)
	}

	// The dry run shows the lesson as evidence; Lessons lists it.
	route, err := m.Route(ctx, "two.test")
	if err != nil || route.Via != Relayed || !strings.Contains(route.Reason, `blocked using zen.spamhaus.org`) || !strings.Contains(route.Reason, "until 2026-12-01T12:00:00Z") {
		t.Errorf("dry run: %+v, %v", route, err)
	}
	lessons, err := m.Lessons(ctx)
	if err != nil || len(lessons) != 1 {
		t.Fatalf("Lessons = %+v, %v", lessons, err)
	}
	l := lessons[0]
	if l.Site != "mx.shared.test" || l.Domain != "one.test" || !strings.HasPrefix(l.Reply, "554 5.7.1 Service unavailable") ||
		l.Verdict != `policy: "blocked using zen.spamhaus.org"` || !l.Until.Equal(w.clock.Now().Add(72*time.Hour)) {
		t.Errorf("lesson %+v", l)
	}

	// Forget by domain: direct again.
	if err := m.Forget(ctx, "two.test"); err != nil {
		t.Fatal(err)
	}
	if lessons, _ := m.Lessons(ctx); len(lessons) != 0 {
		t.Errorf("after Forget: %+v", lessons)
	}
	if route, _ := m.Route(ctx, "two.test"); route.Via != Direct {
		t.Errorf("after Forget the dry run says %+v", route)
	}
}

func TestLearningOff(t *testing.T) {
	w := newLearnWorld(t)
	m := w.mailer(Config{Learning: Learning{Off: true}})
	send(t, m, "a@sender.test", []string{"x@one.test"}, testBody)
	conns := w.site.Connections()
	res, _ := send(t, m, "a@sender.test", []string{"y@two.test"}, testBody)
	if r := wantStatus(t, res, "y@two.test", Delivered); !r.Fallback {
		t.Errorf("with learning off the second domain skipped direct: %+v", r)
	}
	_ = conns
	if !sawRcpt(w.site, "y@two.test") {
		t.Error("with learning off the MX was not tried")
	}
	if lessons, _ := m.Lessons(context.Background()); len(lessons) != 0 {
		t.Errorf("learning off learned %+v", lessons)
	}
}

// Non-policy failures teach nothing: a mailbox refusal is the recipient's,
// greylisting passes by retrying.
func TestLearnOnlyFromPolicy(t *testing.T) {
	w := newDirectWorld(t)
	w.mx("mx.picky.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(rcpt string) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, "grey") {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Try again later"}
		}
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<nospam@picky.test>: Recipient address rejected: User unknown"}
	}})
	w.dns.MX("picky.test", "mx.picky.test")
	relay := newRelay(t, smtptest.Options{})
	m := w.mailer(Config{Relay: relay.relay()})
	send(t, m, "a@sender.test", []string{"nospam@picky.test", "grey@picky.test"}, testBody)
	if lessons, _ := m.Lessons(context.Background()); len(lessons) != 0 {
		t.Errorf("learned from a mailbox refusal or greylisting: %+v", lessons)
	}
	if n := len(relay.s.Messages()); n != 0 {
		t.Errorf("the relay got %d messages", n)
	}
}

// After the TTL one message probes direct: a refusal renews the lesson, a
// delivery forgets it.
func TestLearnedRouteProbe(t *testing.T) {
	w := newLearnWorld(t)
	m := w.mailer(Config{Learning: Learning{TTL: time.Hour}})
	ctx := context.Background()
	send(t, m, "a@sender.test", []string{"x@one.test"}, testBody)
	learned := w.clock.Now()

	w.clock.Advance(59 * time.Minute)
	conns := w.site.Connections()
	send(t, m, "a@sender.test", []string{"y@two.test"}, testBody)
	if w.site.Connections() != conns || sawRcpt(w.site, "y@two.test") {
		t.Fatal("direct was tried before the TTL ran out")
	}

	// Probe 1: still refused, renewed from now.
	w.clock.Advance(2 * time.Minute)
	res, _ := send(t, m, "a@sender.test", []string{"p1@two.test"}, testBody)
	if r := wantStatus(t, res, "p1@two.test", Delivered); !r.Fallback || !strings.Contains(r.Route.Reason, "probing direct") {
		t.Errorf("probe 1: %+v", r)
	}
	if !sawRcpt(w.site, "p1@two.test") {
		t.Error("the probe did not reach the MX")
	}
	lessons, _ := m.Lessons(ctx)
	if len(lessons) != 1 || !lessons[0].Learned.After(learned) || !lessons[0].Until.Equal(w.clock.Now().Add(time.Hour)) {
		t.Fatalf("after a refused probe: %+v", lessons)
	}

	// Probe 2: the block is lifted; delivered direct, lesson forgotten.
	w.open = true
	w.clock.Advance(61 * time.Minute)
	res, _ = send(t, m, "a@sender.test", []string{"p2@one.test"}, testBody)
	if r := wantStatus(t, res, "p2@one.test", Delivered); r.Via != Direct || r.Fallback {
		t.Errorf("probe 2: %+v", r)
	}
	if lessons, _ := m.Lessons(ctx); len(lessons) != 0 {
		t.Errorf("after a delivered probe: %+v", lessons)
	}
}

// While one message probes, the others keep the relay: the probe claim is
// stored, so another instance on the same store sees it too.
func TestLearnedRouteOneProbe(t *testing.T) {
	w := newLearnWorld(t)
	store := &memoryState{}
	m := w.mailer(Config{Learning: Learning{TTL: time.Hour}})
	m.learn.store = store
	send(t, m, "a@sender.test", []string{"x@one.test"}, testBody)
	w.clock.Advance(90 * time.Minute)

	les, held, probe := m.learn.lessonFor(context.Background(), "mx.shared.test")
	if held || !probe {
		t.Fatalf("first after the TTL: held %v probe %v", held, probe)
	}
	// Another instance on the same store.
	m2 := w.mailer(Config{Learning: Learning{TTL: time.Hour}})
	m2.learn.store = store
	if _, held, probe := m2.learn.lessonFor(context.Background(), "mx.shared.test"); !held || probe {
		t.Errorf("second instance during the probe: held %v probe %v (lesson %+v)", held, probe, les)
	}
	if _, held, probe := m.learn.lessonFor(context.Background(), "mx.shared.test"); !held || probe {
		t.Errorf("same instance during the probe: held %v probe %v", held, probe)
	}
}

// Lessons live in the queue's store: a new Mailer on it after a restart
// routes by them. (That the directory store keeps them across its own
// restart is mailroute/spool's TestStateContract.)
func TestLearnedRouteSurvivesRestart(t *testing.T) {
	w := newLearnWorld(t)
	sp := newMemQueue()
	m := w.mailer(Config{Queue: sp})
	send(t, m, "a@sender.test", []string{"x@one.test"}, testBody)
	m.Close()

	m2 := w.mailer(Config{Queue: sp})
	conns := w.site.Connections()
	res, _ := send(t, m2, "a@sender.test", []string{"y@two.test"}, testBody)
	if r := wantStatus(t, res, "y@two.test", Delivered); r.Via != Relayed || r.Fallback {
		t.Errorf("after a restart: %+v", r)
	}
	if w.site.Connections() != conns || sawRcpt(w.site, "y@two.test") {
		t.Error("after a restart the refusing MX was tried again")
	}
}

func TestSiteOf(t *testing.T) {
	hosts := func(names ...string) []*net.MX {
		var out []*net.MX
		for _, n := range names {
			out = append(out, &net.MX{Host: n})
		}
		return out
	}
	if a, b := siteOf(hosts("MX2.Example.NET.", "mx1.example.net")), siteOf(hosts("mx1.example.net.", "mx2.example.net", "mx1.example.net")); a != b || a != "mx1.example.net,mx2.example.net" {
		t.Errorf("sites %q and %q", a, b)
	}
	long := siteOf(hosts(strings.Repeat("a", 200)+".test", strings.Repeat("b", 200)+".test"))
	if k := siteKey(long); len(k) > 255 || !strings.HasPrefix(k, "sha256:") {
		t.Errorf("key for a long site: %q", k)
	}
}

// brokenState fails the calls its fields say, like a database that is
// down or a full disk.
type brokenState struct {
	memoryState
	get, put, del bool
}

var errBroken = errors.New("state store down")

func (b *brokenState) GetState(ctx context.Context, ns, key string, now time.Time) ([]byte, bool, error) {
	if b.get {
		return nil, false, errBroken
	}
	return b.memoryState.GetState(ctx, ns, key, now)
}

func (b *brokenState) PutState(ctx context.Context, ns, key string, v []byte, exp time.Time) error {
	if b.put {
		return errBroken
	}
	return b.memoryState.PutState(ctx, ns, key, v, exp)
}

func (b *brokenState) DeleteState(ctx context.Context, ns, key string) error {
	if b.del {
		return errBroken
	}
	return b.memoryState.DeleteState(ctx, ns, key)
}

// A failing StateStore never fails or loses mail: lessons that cannot be
// read are not applied (the router decides), lessons that cannot be
// stored are not learned; the failure is logged.
func TestLearningStoreFaults(t *testing.T) {
	for _, tt := range []struct {
		name          string
		store         *brokenState
		wantRelayed   bool // the second domain skips direct
		wantWarnAbout string
	}{
		{"reads fail", &brokenState{get: true}, false, "reading learned routes failed"},
		{"writes fail", &brokenState{put: true}, false, "storing a learned route failed"},
		{"deletes fail", &brokenState{del: true}, true, ""},
		{"all well", &brokenState{}, true, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newLearnWorld(t)
			log := &recordingHandler{}
			m := w.mailer(Config{Logger: slog.New(log)})
			m.learn.store = tt.store
			res, _ := send(t, m, "a@sender.test", []string{"x@one.test"}, testBody)
			wantStatus(t, res, "x@one.test", Delivered)
			res, _ = send(t, m, "a@sender.test", []string{"y@two.test"}, testBody)
			r := wantStatus(t, res, "y@two.test", Delivered)
			if relayed := r.Via == Relayed && !r.Fallback; relayed != tt.wantRelayed {
				t.Errorf("second domain %+v: relayed without a direct attempt %v, want %v", r, relayed, tt.wantRelayed)
			}
			if tt.wantWarnAbout != "" && log.count(slog.LevelWarn, tt.wantWarnAbout) == 0 {
				t.Errorf("no warning %q", tt.wantWarnAbout)
			}
		})
	}
}
