package mailroute

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// recordingHandler keeps every log record, for counting.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) count(level slog.Level, contains string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level && strings.Contains(r.Message, contains) {
			n++
		}
	}
	return n
}

// portWorld: dead1…dead4.test have MX hosts on addresses where nothing
// listens (connection refused: what a blocked port 25 looks like when the
// firewall rejects), good.test a working one, and a working relay.
type portWorld struct {
	*directWorld
	good  *smtptest.Server
	relay *relayWorld
	clock *fakeClock
	log   *recordingHandler
}

func newPortWorld(t *testing.T) *portWorld {
	w := &portWorld{directWorld: newDirectWorld(t), clock: newFakeClock(), log: &recordingHandler{}}
	w.good = w.mx("mx.good.test", "127.0.0.1", smtptest.Options{})
	for i, ip := range []string{"127.0.0.9", "127.0.0.10", "127.0.0.11", "127.0.0.12"} {
		host := "mx.dead" + string(rune('1'+i)) + ".test"
		w.dns.Host(host, ip)
		w.dns.MX("dead"+string(rune('1'+i))+".test", host)
	}
	w.dns.MX("good.test", "mx.good.test")
	w.relay = newRelay(t, smtptest.Options{})
	return w
}

func (w *portWorld) mailer(cfg Config) *Mailer {
	cfg.Relay = w.relay.relay()
	cfg.now = w.clock.Now
	cfg.Logger = slog.New(w.log)
	return w.directWorld.mailer(cfg)
}

// TestBlockedPort25Scenarios: which sequences of direct outcomes make the
// detector conclude that port 25 is blocked. Each step sends to one
// domain; "+N" advances the clock N minutes.
func TestBlockedPort25Scenarios(t *testing.T) {
	for _, tt := range []struct {
		name    string
		steps   []string
		blocked bool
	}{
		{"three sites fail at connect", []string{"dead1", "dead2", "dead3"}, true},
		{"two sites are not enough", []string{"dead1", "dead2"}, false},
		{"one site three times is one site", []string{"dead1", "dead1", "dead1"}, false},
		{"a direct server answered in between", []string{"dead1", "dead2", "good", "dead3"}, false},
		{"failures spread beyond the window", []string{"dead1", "dead2", "+11", "dead3"}, false},
		{"a direct answer long before does not count", []string{"good", "+11", "dead1", "dead2", "dead3"}, true},
		{"four sites within the window", []string{"dead1", "+3", "dead2", "+3", "dead3", "+3", "dead4"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newPortWorld(t)
			m := w.mailer(Config{})
			for _, s := range tt.steps {
				if d, ok := strings.CutPrefix(s, "+"); ok {
					n := 0
					for _, c := range d {
						n = n*10 + int(c-'0')
					}
					w.clock.Advance(time.Duration(n) * time.Minute)
					continue
				}
				res, _ := send(t, m, "a@sender.test", []string{"x@" + s + ".test"}, testBody)
				wantStatus(t, res, "x@"+s+".test", Delivered)
			}
			_, blocked := m.learn.blocked.lesson()
			if blocked != tt.blocked {
				t.Errorf("blocked = %v, want %v", blocked, tt.blocked)
			}
			if n := w.log.count(slog.LevelError, "port 25 appears blocked"); n != map[bool]int{true: 1, false: 0}[tt.blocked] {
				t.Errorf("%d Error log lines about port 25", n)
			}
		})
	}
}

// Without a working relay nothing is concluded: the fault may be the
// network as a whole.
func TestBlockedPort25NeedsWorkingRelay(t *testing.T) {
	w := newPortWorld(t)
	w.relay.s.Close()
	m := w.mailer(Config{})
	for _, d := range []string{"dead1", "dead2", "dead3"} {
		send(t, m, "a@sender.test", []string{"x@" + d + ".test"}, testBody)
	}
	if _, blocked := m.learn.blocked.lesson(); blocked {
		t.Error("concluded a blocked port 25 while the relay failed too")
	}
}

// Once blocked, all direct mail goes through the relay, Check reports it,
// the evidence is logged once; after the hold one message probes: a
// refused probe renews, an answered one ends the block.
func TestBlockedPort25RelayAndBack(t *testing.T) {
	w := newPortWorld(t)
	m := w.mailer(Config{})
	ctx := context.Background()
	for _, d := range []string{"dead1", "dead2", "dead3"} {
		send(t, m, "a@sender.test", []string{"x@" + d + ".test"}, testBody)
	}
	res, _ := send(t, m, "a@sender.test", []string{"y@good.test"}, testBody)
	r := wantStatus(t, res, "y@good.test", Delivered)
	if r.Via != Relayed || r.Fallback || !strings.HasPrefix(r.Route.Reason, "outbound port 25 appears blocked: connections to 3 MX sites failed") {
		t.Errorf("while blocked: %+v", r)
	}
	if sawRcpt(w.good, "y@good.test") {
		t.Error("a direct attempt was made while port 25 was found blocked")
	}
	if route, _ := m.Route(ctx, "good.test"); route.Via != Relayed {
		t.Errorf("dry run while blocked: %+v", route)
	}
	// doctor.CheckMailer turns this lesson into its "port 25" finding.
	lessons, _ := m.Lessons(ctx)
	if len(lessons) != 1 || lessons[0].Site != "*" {
		t.Errorf("Lessons = %+v", lessons)
	}

	// The hold ends; the probe goes to a dead site: renewed.
	w.clock.Advance(61 * time.Minute)
	send(t, m, "a@sender.test", []string{"p@dead4.test"}, testBody)
	les, blocked := m.learn.blocked.lesson()
	if !blocked || !les.Until.Equal(w.clock.Now().Add(time.Hour)) {
		t.Fatalf("after a refused probe: %+v, %v", les, blocked)
	}
	send(t, m, "a@sender.test", []string{"z@good.test"}, testBody)
	if sawRcpt(w.good, "z@good.test") {
		t.Error("direct attempted after the block was renewed")
	}

	// The next probe reaches a server: direct mail resumes.
	w.clock.Advance(61 * time.Minute)
	res, _ = send(t, m, "a@sender.test", []string{"q@good.test"}, testBody)
	if r := wantStatus(t, res, "q@good.test", Delivered); r.Via != Direct {
		t.Errorf("probe: %+v", r)
	}
	if _, blocked := m.learn.blocked.lesson(); blocked {
		t.Error("still blocked after a server answered")
	}
	if n := w.log.count(slog.LevelError, "port 25 appears blocked"); n != 1 {
		t.Errorf("%d Error lines, want the evidence logged once", n)
	}

	// Forget("*") ends a block at once. (A block is concluded only when
	// no direct server answered within the window.)
	w.clock.Advance(11 * time.Minute)
	for _, d := range []string{"dead1", "dead2", "dead3"} {
		send(t, m, "a@sender.test", []string{"x2@" + d + ".test"}, testBody)
	}
	if _, blocked := m.learn.blocked.lesson(); !blocked {
		t.Fatal("not blocked again")
	}
	if err := m.Forget(ctx, "*"); err != nil {
		t.Fatal(err)
	}
	if _, blocked := m.learn.blocked.lesson(); blocked {
		t.Error("Forget(\"*\") left the block")
	}
}

// connectFailure names the ways a connection fails before SMTP, and only
// those: a reply or a TLS failure is not a blocked port.
func TestConnectFailure(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	for _, tt := range []struct {
		e    *Error
		want string
	}{
		{&Error{Command: "connect", Err: op(os.NewSyscallError("connect", syscall.ECONNREFUSED))}, "refused"},
		{&Error{Command: "connect", Err: op(os.NewSyscallError("connect", syscall.ENETUNREACH))}, "unreachable"},
		{&Error{Command: "connect", Err: op(os.NewSyscallError("connect", syscall.EHOSTUNREACH))}, "unreachable"},
		{&Error{Command: "connect", Err: op(os.ErrDeadlineExceeded)}, "timeout"},
		{&Error{Command: "connect", Err: context.DeadlineExceeded}, "timeout"},
		{&Error{Command: "connect", Err: op(errors.New("something else"))}, "dial failed"},
		{&Error{Code: 421, Command: "greeting", Message: "busy"}, ""},
		{&Error{Command: "STARTTLS", Err: errors.New("tls: handshake failure")}, ""},
		{nil, ""},
	} {
		if got := connectFailure(tt.e); got != tt.want {
			t.Errorf("connectFailure(%v) = %q, want %q", tt.e, got, tt.want)
		}
	}
}
