package mailroute

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// relayed lists the recipients a relay accepted, message by message.
func relayed(w *relayWorld) []string {
	var out []string
	for _, m := range w.s.Messages() {
		out = append(out, m.Rcpts...)
	}
	return out
}

// deadRelay is a relay address nothing listens on.
func deadRelay(t *testing.T) *Relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return &Relay{Addr: addr, Username: "u", Password: "p"}
}

// A Rule names the relay its destinations take; the rest take the default.
func TestRelaysRuleNamesRelay(t *testing.T) {
	def, gmail := newRelay(t, smtptest.Options{}), newRelay(t, smtptest.Options{})
	w := newDirectWorld(t)
	m := w.mailer(Config{
		Relay:  def.relay(),
		Relays: map[string]*Relay{"google": gmail.relay()},
		Router: Rules{
			{Domains: []string{"gmail.test"}, Via: Relayed, Relay: "google"},
			{Domains: []string{"*"}, Via: Relayed},
		},
	})
	if _, err := send(t, m, "a@sender.test", []string{"x@gmail.test", "y@other.test"}, testBody); err != nil {
		t.Fatal(err)
	}
	if got := relayed(gmail); len(got) != 1 || got[0] != "x@gmail.test" {
		t.Errorf("named relay got %v", got)
	}
	if got := relayed(def); len(got) != 1 || got[0] != "y@other.test" {
		t.Errorf("default relay got %v", got)
	}
	r, err := m.Route(t.Context(), "x@gmail.test")
	if err != nil || r.Relay != "google" || r.Via != Relayed {
		t.Errorf("dry run: %+v, %v", r, err)
	}
}

// A relay that cannot be used hands over to its failover, for each way
// of not being usable; one that refuses the mail itself does not.
func TestRelaysFailover(t *testing.T) {
	tests := []struct {
		name     string
		primary  func(t *testing.T) (*Relay, *relayWorld)
		wantNext bool
		status   Status
	}{
		{"connection refused", func(t *testing.T) (*Relay, *relayWorld) { return deadRelay(t), nil }, true, Delivered},
		{"busy greeting", func(t *testing.T) (*Relay, *relayWorld) {
			w := newRelay(t, smtptest.Options{Greeting421: true})
			return w.relay(), w
		}, true, Delivered},
		{"wrong password", func(t *testing.T) (*Relay, *relayWorld) {
			w := newRelay(t, smtptest.Options{})
			r := w.relay()
			r.Password = "wrong"
			return r, w
		}, true, Delivered},
		{"TLS fails", func(t *testing.T) (*Relay, *relayWorld) {
			w := newRelay(t, smtptest.Options{BrokenTLS: true})
			return w.relay(), w
		}, true, Delivered},
		{"recipient refused: no failover", func(t *testing.T) (*Relay, *relayWorld) {
			w := newRelay(t, smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}})
			return w.relay(), w
		}, false, Failed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary, pw := tt.primary(t)
			primary.Failover = "backup"
			backup := newRelay(t, smtptest.Options{})
			w := newDirectWorld(t)
			m := w.mailer(Config{Relay: primary, Relays: map[string]*Relay{"backup": backup.relay()}, Router: allSmarthost})
			res, _ := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
			r := wantStatus(t, res, "b@dest.test", tt.status)
			if got := len(relayed(backup)); (got == 1) != tt.wantNext || got > 1 {
				t.Errorf("backup relay got %d messages", got)
			}
			if pw != nil && len(pw.s.Messages()) != 0 {
				t.Errorf("the primary accepted mail")
			}
			if tt.wantNext && r.Host != "127.0.0.1" {
				t.Errorf("host %q", r.Host)
			}
		})
	}
}

// When every relay of the chain fails, the recipient is kept (Deferred)
// and the error says what each relay did.
func TestRelaysFailoverChainExhausted(t *testing.T) {
	a, b := deadRelay(t), deadRelay(t)
	a.Failover, b.Failover = "b", "c"
	c := newRelay(t, smtptest.Options{Greeting421: true})
	w := newDirectWorld(t)
	m := w.mailer(Config{Relay: a, Relays: map[string]*Relay{"b": b, "c": c.relay()}, Router: allSmarthost})
	res, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
	r := wantStatus(t, res, "b@dest.test", Deferred)
	var e *Error
	if !errors.As(r.Err, &e) || e.Code != 421 || e.Command != "greeting" {
		t.Errorf("err %v, want the last relay's 421", r.Err)
	}
	msg := err.Error()
	if strings.Count(msg, "after failing over from") != 1 || strings.Count(msg, "then from") != 1 ||
		!strings.Contains(msg, a.Addr[strings.LastIndexByte(a.Addr, ':'):]) && !strings.Contains(msg, "connect") {
		t.Errorf("error text %s", msg)
	}
}

// The envelope sender's domain picks the relay; a route naming one beats
// it, and the default takes everyone else.
func TestRelaysPerSender(t *testing.T) {
	def, brand1, brand2, pinned := newRelay(t, smtptest.Options{}), newRelay(t, smtptest.Options{}), newRelay(t, smtptest.Options{}), newRelay(t, smtptest.Options{})
	w := newDirectWorld(t)
	m := w.mailer(Config{
		Relay:        def.relay(),
		Relays:       map[string]*Relay{"brand1": brand1.relay(), "brand2": brand2.relay(), "pinned": pinned.relay()},
		SenderRelays: map[string]string{"brand1.test": "brand1", ".brand2.test": "brand2"},
		Router: Rules{
			{Domains: []string{"pinned.test"}, Via: Relayed, Relay: "pinned"},
			{Domains: []string{"*"}, Via: Relayed},
		},
	})
	for _, tt := range []struct{ from, to string }{
		{"news@brand1.test", "x1@dest.test"},
		{"news@mail.brand2.test", "x2@dest.test"},
		{"news@brand2.test", "x3@dest.test"},
		{"news@sub.brand1.test", "x4@dest.test"}, // brand1.test is exact: not its subdomains
		{"news@brand1.test", "x5@pinned.test"},
		{"", "x6@dest.test"}, // the null sender has no domain
	} {
		if _, err := send(t, m, tt.from, []string{tt.to}, testBody); err != nil {
			t.Fatalf("%s → %s: %v", tt.from, tt.to, err)
		}
	}
	for name, want := range map[*relayWorld]string{brand1: "x1@dest.test", brand2: "x2@dest.test,x3@dest.test", def: "x4@dest.test,x6@dest.test", pinned: "x5@pinned.test"} {
		if got := strings.Join(relayed(name), ","); got != want {
			t.Errorf("relay got %s, want %s", got, want)
		}
	}
}

// Fallback from direct delivery goes to the relay the direct route names.
func TestRelaysFallbackUsesRouteRelay(t *testing.T) {
	w := newDirectWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "client host blocked using Spamhaus"}
	}})
	w.dns.MX("dest.test", "mx.dest.test")
	def, fb := newRelay(t, smtptest.Options{}), newRelay(t, smtptest.Options{})
	m := w.mailer(Config{
		Relay:  def.relay(),
		Relays: map[string]*Relay{"fallback": fb.relay()},
		Router: Rules{{Domains: []string{"*"}, Via: Direct, Relay: "fallback"}},
	})
	res, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	if r := wantStatus(t, res, "b@dest.test", Delivered); !r.Fallback || r.DirectErr == nil {
		t.Errorf("%+v", r)
	}
	if len(relayed(fb)) != 1 || len(relayed(def)) != 0 {
		t.Errorf("fallback relay got %v, default %v", relayed(fb), relayed(def))
	}
}

// The queue's fallback over time goes to the relay the route names too.
func TestRelaysQueueFallbackUsesRouteRelay(t *testing.T) {
	w := newDirectWorld(t)
	policy, _ := deferFirst(1000)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: policy})
	w.dns.MX("dest.test", "mx.dest.test")
	def, fb := newRelay(t, smtptest.Options{}), newRelay(t, smtptest.Options{})
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{
		Relay:  def.relay(),
		Relays: map[string]*Relay{"fallback": fb.relay()},
		Router: Rules{{Domains: []string{"*"}, Via: Direct, Relay: "fallback"}},
	}, clock, events)
	res, _ := send(t, m, "a@sender.test", []string{"grey@dest.test"}, testBody)
	wantStatus(t, res, "grey@dest.test", Queued)
	for range 2 {
		clock.Advance(15 * time.Minute)
		m.runQueue(t)
	}
	if len(relayed(fb)) != 1 || len(relayed(def)) != 0 || m.queueLen(t) != 0 {
		t.Errorf("fallback relay got %v, default %v, %d queued", relayed(fb), relayed(def), m.queueLen(t))
	}
}

// A Router of one's own naming a relay that does not exist keeps the mail.
func TestRelaysUnknownNameFromRouter(t *testing.T) {
	def := newRelay(t, smtptest.Options{})
	w := newDirectWorld(t)
	m := w.mailer(Config{Relay: def.relay(), Router: RouterFunc(func(_ context.Context, d *Destination) (Route, error) {
		return Route{Via: Relayed, Relay: "nope", Reason: "mine"}, nil
	})})
	res, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
	wantStatus(t, res, "b@dest.test", Deferred)
	if !errors.Is(err, ErrNoRelay) || !strings.Contains(err.Error(), `"nope"`) || len(relayed(def)) != 0 {
		t.Errorf("err %v", err)
	}
}

func TestRelaysConfigValidation(t *testing.T) {
	ok := func() *Relay { return &Relay{Addr: "smtp.example.com:587"} }
	loop := func(next string) *Relay { r := ok(); r.Failover = next; return r }
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Relays: map[string]*Relay{"": ok()}}, "needs a name"},
		{Config{Relays: map[string]*Relay{"a": nil}}, "is nil"},
		{Config{Relays: map[string]*Relay{"a": {Addr: "nohost"}}}, `Config.Relays["a"]: Relay.Addr`},
		{Config{Relay: loop("b")}, `Config.Relay.Failover names "b"`},
		{Config{Relays: map[string]*Relay{"a": loop("b"), "b": loop("a")}}, "comes back"},
		{Config{Relays: map[string]*Relay{"a": loop("a")}}, "comes back"},
		{Config{SenderRelays: map[string]string{"brand.test": "x"}}, `names "x"`},
		{Config{Relays: map[string]*Relay{"a": ok()}, SenderRelays: map[string]string{"*": "a"}}, "Relay's place"},
		{Config{Relays: map[string]*Relay{"a": ok()}, SenderRelays: map[string]string{"bad domain": "a"}}, "SenderRelays"},
		{Config{Router: Rules{{Domains: []string{"*"}, Via: Relayed, Relay: "x"}}}, `rule 1: Relay "x"`},
	} {
		tt.cfg.Hostname = "mail.example.net"
		_, err := New(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Count(err.Error(), "mailroute: ") != 1 {
			t.Errorf("New(%+v): %v, want it to say %q", tt.cfg, err, tt.want)
		}
	}
}
