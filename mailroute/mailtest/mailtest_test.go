package mailtest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

const body = "From: a@example.net\r\nSubject: test\r\n\r\nHello.\r\n"

// world is one MX for dest.test and a Mailer that reaches it.
func world(t *testing.T, opts mailtest.Options, cfg mailroute.Config) (*mailtest.Server, *mailroute.Mailer) {
	t.Helper()
	mx, err := mailtest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mx.Close)
	cfg.Hostname = "mail.example.net"
	if cfg.Resolver == nil {
		cfg.Resolver = &mailtest.Resolver{
			MX:    map[string][]string{"dest.test": {"mx.dest.test"}},
			Hosts: map[string][]string{"mx.dest.test": {"127.0.0.1"}},
		}
	}
	if cfg.Router == nil {
		cfg.Router = mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}}
	}
	cfg.Direct.Port = mx.Port()
	m, err := mailroute.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return mx, m
}

func send(t *testing.T, m *mailroute.Mailer, to ...string) *mailroute.Result {
	t.Helper()
	res, _ := m.Send(context.Background(), "a@example.net", to, strings.NewReader(body))
	return res
}

func status(res *mailroute.Result, rcpt string) (mailroute.Status, error) {
	for _, r := range res.Recipients {
		if r.Rcpt == rcpt {
			return r.Status, r.Err
		}
	}
	return 0, errors.New("no such recipient")
}

func TestServerRecords(t *testing.T) {
	mx, m := world(t, mailtest.Options{Hostname: "mx.dest.test"}, mailroute.Config{})
	send(t, m, "b@dest.test", "c@dest.test")
	msgs := mx.Messages()
	if len(msgs) != 1 || msgs[0].From != "a@example.net" || strings.Join(msgs[0].Rcpts, ",") != "b@dest.test,c@dest.test" ||
		string(msgs[0].Data) != body || msgs[0].Helo != "mail.example.net" || msgs[0].TLS || mx.Connections() != 1 {
		t.Errorf("recorded %+v, %d connections", msgs, mx.Connections())
	}
}

// Each behaviour a Server can play, and what a Mailer makes of it.
func TestServerBehaviours(t *testing.T) {
	ca, err := mailtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts mailtest.Options
		cfg  mailroute.Config
		want mailroute.Status
		code int // of the *mailroute.Error, when not delivered
	}{
		{"refuses a recipient", mailtest.Options{Refuse: func(rcpt string) *mailtest.Reply {
			return &mailtest.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "no such user"}
		}}, mailroute.Config{}, mailroute.Failed, 550},
		{"defers a recipient", mailtest.Options{Refuse: func(rcpt string) *mailtest.Reply {
			return &mailtest.Reply{Code: 452, Enhanced: [3]int{4, 2, 2}, Message: "mailbox full"}
		}}, mailroute.Config{}, mailroute.Deferred, 452},
		{"greylists the first try", mailtest.Options{Greylist: true}, mailroute.Config{}, mailroute.Deferred, 450},
		{"requires TLS, offers none", mailtest.Options{RequireTLS: true}, mailroute.Config{}, mailroute.Failed, 530},
		{"requires TLS, offers it", mailtest.Options{RequireTLS: true, TLS: ca.ServerConfig("mx.dest.test")}, mailroute.Config{}, mailroute.Delivered, 0},
		{"verified TLS against the CA", mailtest.Options{TLS: ca.ServerConfig("mx.dest.test")},
			mailroute.Config{Direct: mailroute.DirectOptions{TLS: mailroute.RequireTLS, TLSConfig: ca.ClientConfig()}}, mailroute.Delivered, 0},
		{"a certificate from another CA", mailtest.Options{TLS: mustCA(t).ServerConfig("mx.dest.test")},
			mailroute.Config{Direct: mailroute.DirectOptions{TLS: mailroute.RequireTLS, TLSConfig: ca.ClientConfig()}}, mailroute.Deferred, 0},
		{"answers slower than the client waits", mailtest.Options{Delay: 10 * time.Second},
			mailroute.Config{Direct: mailroute.DirectOptions{Timeouts: mailroute.Timeouts{Mail: 50 * time.Millisecond}}}, mailroute.Deferred, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mx, m := world(t, tt.opts, tt.cfg)
			st, err := status(send(t, m, "b@dest.test"), "b@dest.test")
			if st != tt.want {
				t.Fatalf("status %v (%v), want %v", st, err, tt.want)
			}
			var e *mailroute.Error
			if tt.code != 0 && (!errors.As(err, &e) || e.Code != tt.code) {
				t.Errorf("err %v, want a %d", err, tt.code)
			}
			if got := len(mx.Messages()); (got == 1) != (tt.want == mailroute.Delivered) {
				t.Errorf("%d messages recorded", got)
			}
			if tt.opts.Greylist {
				if st, err := status(send(t, m, "b@dest.test"), "b@dest.test"); st != mailroute.Delivered {
					t.Errorf("second try: %v %v", st, err)
				}
			}
		})
	}
}

func mustCA(t *testing.T) *mailtest.CA {
	ca, err := mailtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// A relay with Users requires AUTH; over TLS from the CA it is a
// submission server as a Relay meets it.
func TestServerRelayAuth(t *testing.T) {
	ca := mustCA(t)
	relay, err := mailtest.NewServer(mailtest.Options{TLS: ca.ServerConfig("127.0.0.1"), Users: map[string]string{"app": "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	for _, pw := range []string{"wrong", "secret"} {
		m, err := mailroute.New(mailroute.Config{
			Hostname: "mail.example.net",
			Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Relayed}},
			Relay:    &mailroute.Relay{Addr: relay.Addr, Username: "app", Password: pw, TLSConfig: ca.ClientConfig()},
		})
		if err != nil {
			t.Fatal(err)
		}
		st, err := status(send(t, m, "b@dest.test"), "b@dest.test")
		m.Close()
		if want := map[string]mailroute.Status{"wrong": mailroute.Deferred, "secret": mailroute.Delivered}[pw]; st != want {
			t.Errorf("password %s: %v (%v), want %v", pw, st, err, want)
		}
	}
	if msgs := relay.Messages(); len(msgs) != 1 || msgs[0].AuthUser != "app" || !msgs[0].TLS {
		t.Errorf("relay recorded %+v", msgs)
	}
}

// The Resolver's answers, as the Mailer reads them.
func TestResolver(t *testing.T) {
	dns := &mailtest.Resolver{
		MX: map[string][]string{
			"Dest.Test.":  {"mx.dest.test"},
			"nomail.test": {"."},
		},
		Hosts: map[string][]string{
			"mx.dest.test":  {"127.0.0.1"},
			"implicit.test": {"127.0.0.1"},
		},
	}
	mx, m := world(t, mailtest.Options{}, mailroute.Config{Resolver: dns})
	res := send(t, m, "a@dest.test", "b@implicit.test", "c@nomail.test", "d@nowhere.test")
	for rcpt, want := range map[string]mailroute.Status{
		"a@dest.test":     mailroute.Delivered,
		"b@implicit.test": mailroute.Delivered, // no MX: its own address
		"c@nomail.test":   mailroute.Failed,    // null MX
		"d@nowhere.test":  mailroute.Failed,    // NXDOMAIN
	} {
		st, err := status(res, rcpt)
		if st != want {
			t.Errorf("%s: %v (%v), want %v", rcpt, st, err, want)
		}
	}
	if !errors.Is(mustErr(res, "c@nomail.test"), mailroute.ErrNullMX) || !errors.Is(mustErr(res, "d@nowhere.test"), mailroute.ErrNoSuchDomain) {
		t.Errorf("errors %v / %v", mustErr(res, "c@nomail.test"), mustErr(res, "d@nowhere.test"))
	}
	if len(mx.Messages()) != 2 {
		t.Errorf("%d messages", len(mx.Messages()))
	}
}

func mustErr(res *mailroute.Result, rcpt string) error {
	_, err := status(res, rcpt)
	return err
}
