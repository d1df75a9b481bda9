package mailroute

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

const testBody = "From: a@sender.test\r\nTo: b@dest.test\r\nSubject: hi\r\n\r\nHello.\r\n"

// directWorld is a DNS server plus MX servers on loopback addresses that
// all listen on one port, as real MX hosts all listen on 25.
type directWorld struct {
	t    *testing.T
	dns  *dnstest.Server
	port int
}

func newDirectWorld(t *testing.T) *directWorld {
	t.Helper()
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	return &directWorld{t: t, dns: dns}
}

// mx starts an SMTP server on ip (at the world's port, picked by the first
// server) and publishes host name → ip.
func (w *directWorld) mx(name, ip string, opts smtptest.Options) *smtptest.Server {
	w.t.Helper()
	opts.Listen = net.JoinHostPort(ip, strconv.Itoa(w.port))
	if opts.Domain == "" {
		opts.Domain = name
	}
	s := smtptest.Start(w.t, opts)
	if w.port == 0 {
		w.port = s.Port()
	}
	w.dns.Host(name, ip)
	return s
}

// freePort reserves the world's port without a server behind it, so that
// a "dead" MX refuses connections on it.
func (w *directWorld) freePort() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	w.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
}

func (w *directWorld) mailer(cfg Config) *Mailer {
	w.t.Helper()
	cfg.Resolver = DNSServer(w.dns.Addr)
	cfg.Hostname = "mail.sender.test"
	cfg.Direct.Port = w.port
	if cfg.Router == nil {
		cfg.Router = Rules{{Domains: []string{"*"}, Via: Direct}}
	}
	m, err := New(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { m.Close() })
	return m
}

func send(t *testing.T, m *Mailer, from string, to []string, body string) (*Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return m.Send(ctx, from, to, strings.NewReader(body))
}

func wantStatus(t *testing.T, res *Result, rcpt string, st Status) RecipientResult {
	t.Helper()
	for _, r := range res.Recipients {
		if r.Rcpt == rcpt {
			if r.Status != st {
				t.Errorf("%s: status %v (err %v), want %v", rcpt, r.Status, r.Err, st)
			}
			return r
		}
	}
	t.Fatalf("no result for %s in %+v", rcpt, res.Recipients)
	return RecipientResult{}
}

func TestDirectDelivers(t *testing.T) {
	w := newDirectWorld(t)
	ca := testpki.New(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{
		TLS: ca.ServerConfig("mx.dest.test"),
		RcptPolicy: func(rcpt string) *smtp.SMTPError {
			switch {
			case strings.HasPrefix(rcpt, "reject"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			case strings.HasPrefix(rcpt, "tempfail"):
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "try later"}
			}
			return nil
		},
	})
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{})

	res, err := send(t, m, "a@sender.test", []string{"b@dest.test", "reject@dest.test", "tempfail@Dest.Test"}, testBody)
	if err == nil {
		t.Fatal("Send returned nil error with two recipients undelivered")
	}
	ok := wantStatus(t, res, "b@dest.test", Delivered)
	if ok.Host != "mx.dest.test" || ok.Via != Direct || !strings.HasPrefix(ok.Response, "250") {
		t.Errorf("delivered result %+v", ok)
	}
	rej := wantStatus(t, res, "reject@dest.test", Failed)
	var e *Error
	if !errors.As(rej.Err, &e) || e.Code != 550 || e.Enhanced != (EnhancedCode{5, 1, 1}) || e.Command != "RCPT" || e.Host != "mx.dest.test" || !e.Permanent {
		t.Errorf("550 recipient: %#v", rej.Err)
	}
	tmp := wantStatus(t, res, "tempfail@dest.test", Deferred)
	if !errors.As(tmp.Err, &e) || e.Code != 450 || e.Permanent {
		t.Errorf("450 recipient: %#v", tmp.Err)
	}
	if !errors.As(err, &e) {
		t.Errorf("Send's error does not hold an *Error: %v", err)
	}

	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages arrived, want 1", len(msgs))
	}
	got := msgs[0]
	if !got.TLS || got.From != "a@sender.test" || len(got.Rcpts) != 1 || got.Rcpts[0] != "b@dest.test" || got.Helo != "mail.sender.test" {
		t.Errorf("arrived: TLS %v from %q rcpts %v helo %q", got.TLS, got.From, got.Rcpts, got.Helo)
	}
	if string(got.Data) != testBody {
		t.Errorf("body arrived as %q, want %q", got.Data, testBody)
	}
}

func TestDirectGreeting421NextMX(t *testing.T) {
	w := newDirectWorld(t)
	busy := w.mx("mx1.dest.test", "127.0.0.1", smtptest.Options{Greeting421: true})
	good := w.mx("mx2.dest.test", "127.0.0.2", smtptest.Options{})
	w.dns.MX("dest.test", "mx1.dest.test", "mx2.dest.test")
	res, err := send(t, w.mailer(Config{}), "a@sender.test", []string{"b@dest.test"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	if r := wantStatus(t, res, "b@dest.test", Delivered); r.Host != "mx2.dest.test" {
		t.Errorf("delivered by %q, want mx2.dest.test", r.Host)
	}
	if busy.Connections() != 1 || len(good.Messages()) != 1 {
		t.Errorf("mx1 connections %d, mx2 messages %d", busy.Connections(), len(good.Messages()))
	}
}

func TestDirectMX1DownMX2Delivers(t *testing.T) {
	w := newDirectWorld(t)
	good := w.mx("mx2.dest.test", "127.0.0.2", smtptest.Options{})
	w.dns.Host("mx1.dest.test", "127.0.0.9") // nothing listens there
	w.dns.MX("dest.test", "mx1.dest.test", "mx2.dest.test")
	res, err := send(t, w.mailer(Config{}), "a@sender.test", []string{"b@dest.test"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, res, "b@dest.test", Delivered)
	if len(good.Messages()) != 1 {
		t.Fatal("mx2 got nothing")
	}
}

func TestDirectAllMXDown(t *testing.T) {
	w := newDirectWorld(t)
	w.freePort()
	w.dns.Host("mx1.dest.test", "127.0.0.9")
	w.dns.Host("mx2.dest.test", "127.0.0.10")
	w.dns.MX("dest.test", "mx1.dest.test", "mx2.dest.test")
	res, err := send(t, w.mailer(Config{}), "a@sender.test", []string{"b@dest.test"}, testBody)
	if err == nil {
		t.Fatal("no error")
	}
	r := wantStatus(t, res, "b@dest.test", Deferred)
	var e *Error
	if !errors.As(r.Err, &e) || e.Command != "connect" || e.Host != "mx2.dest.test" || e.Permanent {
		t.Errorf("err %#v, want a temporary connect error from the last host", r.Err)
	}
	var op *net.OpError
	if !errors.As(r.Err, &op) {
		t.Errorf("the network error is not reachable: %v", r.Err)
	}
}

func TestDirectBrokenTLS(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{BrokenTLS: true})
	w.dns.MX("dest.test", "mx.dest.test")

	// Opportunistic: the handshake fails, the same host is retried in
	// plaintext and takes the message.
	res, err := send(t, w.mailer(Config{}), "a@sender.test", []string{"b@dest.test"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, res, "b@dest.test", Delivered)
	if msgs := s.Messages(); len(msgs) != 1 || msgs[0].TLS || s.Connections() != 2 {
		t.Fatalf("messages %d (TLS %v), connections %d: want one plaintext message over the second connection", len(msgs), len(msgs) > 0 && msgs[0].TLS, s.Connections())
	}

	// RequireTLS: never plaintext; nothing sent.
	res, err = send(t, w.mailer(Config{Direct: DirectOptions{TLS: RequireTLS}}), "a@sender.test", []string{"c@dest.test"}, testBody)
	if err == nil {
		t.Fatal("RequireTLS delivered over a broken TLS")
	}
	r := wantStatus(t, res, "c@dest.test", Deferred)
	if !errors.Is(r.Err, ErrTLSRequired) {
		t.Errorf("err %v, want ErrTLSRequired", r.Err)
	}
	if len(s.Messages()) != 1 || bytes.Contains(s.Transcript(), []byte("c@dest.test")) {
		t.Error("RequireTLS let the envelope cross in plaintext")
	}
}

func TestDirectRequireTLSVerifiesMXName(t *testing.T) {
	w := newDirectWorld(t)
	ca := testpki.New(t)
	wrong := w.mx("mx1.dest.test", "127.0.0.1", smtptest.Options{TLS: ca.ServerConfig("other.test")})
	right := w.mx("mx2.dest.test", "127.0.0.2", smtptest.Options{TLS: ca.ServerConfig("mx2.dest.test")})
	w.dns.MX("dest.test", "mx1.dest.test", "mx2.dest.test")
	m := w.mailer(Config{Direct: DirectOptions{TLS: RequireTLS, TLSConfig: &tls.Config{RootCAs: ca.Pool()}}})
	res, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	if r := wantStatus(t, res, "b@dest.test", Delivered); r.Host != "mx2.dest.test" {
		t.Errorf("host %q", r.Host)
	}
	if len(wrong.Messages()) != 0 || len(right.Messages()) != 1 || !right.Messages()[0].TLS {
		t.Error("the message went to the host with the wrong certificate, or without TLS")
	}
}

func TestDirect150RecipientsTwoTransactions(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	var rcpts []string
	for i := range 150 {
		rcpts = append(rcpts, fmt.Sprintf("u%03d@dest.test", i))
	}
	res, err := send(t, w.mailer(Config{}), "a@sender.test", rcpts, testBody)
	if err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != 2 || len(msgs[0].Rcpts) != 100 || len(msgs[1].Rcpts) != 50 {
		t.Fatalf("%d transactions, want 2 (100 + 50)", len(msgs))
	}
	if s.Connections() != 1 {
		t.Errorf("%d connections, want 1 (reused for the second transaction)", s.Connections())
	}
	for _, r := range res.Recipients {
		if r.Status != Delivered {
			t.Fatalf("%s: %v", r.Rcpt, r.Err)
		}
	}
}

func TestDirectServerRecipientLimit(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{MaxRecipients: 10})
	w.dns.MX("dest.test", "mx.dest.test")
	var rcpts []string
	for i := range 35 {
		rcpts = append(rcpts, fmt.Sprintf("u%02d@dest.test", i))
	}
	if _, err := send(t, w.mailer(Config{}), "a@sender.test", rcpts, testBody); err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, m := range s.Messages() {
		got += len(m.Rcpts)
	}
	if got != 35 || len(s.Messages()) != 4 {
		t.Fatalf("%d recipients over %d messages, want 35 over 4", got, len(s.Messages()))
	}
}

func TestDirectSizeLimit(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{MaxMessageBytes: 1000})
	w.dns.MX("dest.test", "mx.dest.test")
	big := testBody + strings.Repeat("x", 70) + "\r\n"
	big = strings.Repeat(big, 20)
	res, err := send(t, w.mailer(Config{}), "a@sender.test", []string{"b@dest.test"}, big)
	if err == nil {
		t.Fatal("oversized message delivered")
	}
	r := wantStatus(t, res, "b@dest.test", Failed)
	if !errors.Is(r.Err, ErrMessageTooLarge) {
		t.Errorf("err %v, want ErrMessageTooLarge", r.Err)
	}
	if len(s.Attempts()) != 0 || bytes.Contains(s.Transcript(), []byte("DATA")) || bytes.Contains(s.Transcript(), []byte("MAIL")) {
		t.Errorf("something was sent:\n%s", s.Transcript())
	}
}

func TestDirectStallMidData(t *testing.T) {
	w := newDirectWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{StallDuringData: true})
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{Direct: DirectOptions{Timeouts: Timeouts{DataBlock: 300 * time.Millisecond}}})
	line := strings.Repeat("y", 900) + "\r\n"
	body := testBody + strings.Repeat(line, 16*1024*1024/len(line))
	res, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, body)
	if err == nil {
		t.Fatal("delivered to a server that stopped reading")
	}
	r := wantStatus(t, res, "b@dest.test", Deferred)
	var e *Error
	if !errors.As(r.Err, &e) || e.Command != "BODY" || e.Permanent {
		t.Errorf("err %#v, want a temporary BODY error", r.Err)
	}
	var ne net.Error
	if !errors.As(r.Err, &ne) || !ne.Timeout() {
		t.Errorf("err %v is not a timeout", r.Err)
	}
}

func TestDirectCloseAfterDot(t *testing.T) {
	w := newDirectWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{CloseAfterDot: true})
	w.dns.MX("dest.test", "mx.dest.test")
	res, _ := send(t, w.mailer(Config{}), "a@sender.test", []string{"b@dest.test"}, testBody)
	r := wantStatus(t, res, "b@dest.test", Deferred)
	if !errors.Is(r.Err, ErrConnectionLost) {
		t.Errorf("err %v, want ErrConnectionLost", r.Err)
	}
}

func TestDirectIPv6OnlyMX(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	} else {
		ln.Close()
	}
	w := newDirectWorld(t)
	s := w.mx("v6.dest.test", "::1", smtptest.Options{})
	w.dns.MX("dest.test", "v6.dest.test")
	res, err := send(t, w.mailer(Config{}), "a@sender.test", []string{"b@dest.test"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, res, "b@dest.test", Delivered)
	if len(s.Messages()) != 1 {
		t.Fatal("the IPv6 MX got nothing")
	}
}

func TestDirectEqualPreferenceSpread(t *testing.T) {
	w := newDirectWorld(t)
	a := w.mx("a.dest.test", "127.0.0.1", smtptest.Options{})
	b := w.mx("b.dest.test", "127.0.0.2", smtptest.Options{})
	w.dns.Add("dest.test. MX 10 a.dest.test.", "dest.test. MX 10 b.dest.test.")
	m := w.mailer(Config{})
	for i := range 100 {
		if _, err := send(t, m, "a@sender.test", []string{fmt.Sprintf("u%d@dest.test", i)}, testBody); err != nil {
			t.Fatal(err)
		}
	}
	na, nb := len(a.Messages()), len(b.Messages())
	if na+nb != 100 || na < 20 || nb < 20 {
		t.Fatalf("equal-preference MX got %d and %d of 100 messages", na, nb)
	}
}

func TestDirectDNSFailuresNeverConnect(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.NullMX("nullmx.test")
	w.dns.ServFail("servfail.test")
	m := w.mailer(Config{})
	res, err := send(t, m, "a@sender.test", []string{"a@nullmx.test", "b@nxdomain.test", "c@servfail.test"}, testBody)
	if err == nil {
		t.Fatal("no error")
	}
	for rcpt, want := range map[string]struct {
		st   Status
		kind error
	}{
		"a@nullmx.test":   {Failed, ErrNullMX},
		"b@nxdomain.test": {Failed, ErrNoSuchDomain},
		"c@servfail.test": {Deferred, ErrDNSTemporary},
	} {
		r := wantStatus(t, res, rcpt, want.st)
		if !errors.Is(r.Err, want.kind) {
			t.Errorf("%s: %v, want %v", rcpt, r.Err, want.kind)
		}
	}
	if s.Connections() != 0 {
		t.Errorf("%d connections made", s.Connections())
	}
}

func TestSendRefusesBadEnvelopeBeforeConnecting(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{})
	bad := []struct{ from, to string }{
		{"a@sender.test", "b@dest.test\r\nRCPT TO:<evil@dest.test>"},
		{"a@sender.test", "b@dest.test\n"},
		{"a@sender.test", "b\x00@dest.test"},
		{"a@sender.test", "b@dest.test> SIZE=1"},
		{"a@sender.test", "<b@dest.test"},
		{"a@sender.test", "b c@dest.test"},
		{"a@sender.test", "b@"},
		{"a@sender.test", "b"},
		{"a@sender.test\r\nRSET", "b@dest.test"},
		{"a@sender.test>", "b@dest.test"},
	}
	for _, tt := range bad {
		res, err := send(t, m, tt.from, []string{"ok@dest.test", tt.to}, testBody)
		var se *SendError
		if !errors.As(err, &se) || res == nil || len(res.Recipients) != 2 {
			t.Errorf("Send(%q, %q) = %v, %v; want a SendError and a result for both recipients", tt.from, tt.to, res, err)
			continue
		}
		// The error names what was given, quoted: no CR or NUL, and every
		// line after the first starts with the recipients it is about.
		lines := strings.Split(err.Error(), "\n")
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, "<") && !strings.HasPrefix(l, `"`) {
				t.Errorf("Send(%q, %q): error line %q", tt.from, tt.to, l)
			}
		}
		if len(se.Delivered) != 0 || strings.ContainsAny(err.Error(), "\r\x00") {
			t.Errorf("Send(%q, %q): %q", tt.from, tt.to, err)
		}
		if tt.from != "a@sender.test" {
			// A malformed sender fails every recipient for good.
			if len(se.Failed) != 2 || res.Recipients[0].Status != Failed || res.Recipients[1].Status != Failed {
				t.Errorf("Send(%q, %q): %+v", tt.from, tt.to, se)
			}
			continue
		}
		// The malformed recipient failed; the other was not attempted,
		// which may pass: Deferred with ErrNotAttempted.
		ok, badR := res.Recipients[0], res.Recipients[1]
		if ok.Status != Deferred || !errors.Is(ok.Err, ErrNotAttempted) || badR.Status != Failed || badR.Rcpt != tt.to {
			t.Errorf("Send(%q, %q): ok %v %v, bad %v %v", tt.from, tt.to, ok.Status, ok.Err, badR.Status, badR.Err)
		}
		if len(se.Deferred) != 1 || se.Deferred[0] != "ok@dest.test" || len(se.Failed) != 1 || se.Failed[0] != tt.to {
			t.Errorf("Send(%q, %q): SendError %+v", tt.from, tt.to, se)
		}
	}
	if s.Connections() != 0 || w.dns.TotalQueries() != 0 {
		t.Errorf("bad input caused %d connections and %d DNS queries", s.Connections(), w.dns.TotalQueries())
	}
}

func TestSendNullSenderAndDuplicates(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	res, err := send(t, w.mailer(Config{}), "", []string{"b@dest.test", "b@DEST.test", "<b@dest.test>"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Recipients) != 1 {
		t.Errorf("%d results for one recipient given three times", len(res.Recipients))
	}
	msgs := s.Messages()
	if len(msgs) != 1 || msgs[0].From != "" || len(msgs[0].Rcpts) != 1 {
		t.Fatalf("arrived %+v", msgs)
	}
}

// A non-ASCII local part needs SMTPUTF8 (RFC 6531): a clear permanent
// error for that recipient when the server lacks it, nothing sent; a
// server offering it gets the message. An IDN domain goes out as A-labels.
func TestDirectSMTPUTF8(t *testing.T) {
	w := newDirectWorld(t)
	plain := w.mx("mx.plain.test", "127.0.0.1", smtptest.Options{})
	utf8 := w.mx("mx.utf8.test", "127.0.0.2", smtptest.Options{EnableSMTPUTF8: true})
	w.dns.MX("plain.test", "mx.plain.test")
	w.dns.MX("xn--bcher-kva.test", "mx.utf8.test")
	m := w.mailer(Config{})
	res, err := send(t, m, "a@sender.test", []string{"jürgen@plain.test", "ascii@plain.test", "jürgen@bücher.test"}, testBody)
	if err == nil {
		t.Fatal("no error for the recipient that needs SMTPUTF8")
	}
	r := wantStatus(t, res, "jürgen@plain.test", Failed)
	if !errors.Is(r.Err, ErrSMTPUTF8Required) || !IsPermanent(r.Err) {
		t.Errorf("err %v, want a permanent ErrSMTPUTF8Required", r.Err)
	}
	wantStatus(t, res, "ascii@plain.test", Delivered)
	wantStatus(t, res, "jürgen@xn--bcher-kva.test", Delivered)
	if msgs := utf8.Messages(); len(msgs) != 1 || msgs[0].Rcpts[0] != "jürgen@xn--bcher-kva.test" || !msgs[0].MailOpts.UTF8 {
		t.Errorf("the SMTPUTF8 server got %+v", msgs)
	}
	for _, msg := range plain.Messages() {
		for _, rc := range msg.Rcpts {
			if rc != "ascii@plain.test" {
				t.Errorf("the plain server got %q", rc)
			}
		}
	}
}

// An address literal goes direct to that address, with no DNS at all.
func TestDirectAddressLiteral(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.unused.test", "127.0.0.1", smtptest.Options{})
	before := w.dns.TotalQueries()
	res, err := send(t, w.mailer(Config{Router: DefaultRouter}), "a@sender.test", []string{"postmaster@[127.0.0.1]"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	r := wantStatus(t, res, "postmaster@[127.0.0.1]", Delivered)
	if r.Via != Direct || r.Host != "127.0.0.1" || !strings.Contains(r.Route.Reason, "address literal") {
		t.Errorf("%+v", r)
	}
	if msgs := s.Messages(); len(msgs) != 1 || msgs[0].Rcpts[0] != "postmaster@[127.0.0.1]" {
		t.Fatalf("arrived %+v", msgs)
	}
	if w.dns.TotalQueries() != before {
		t.Error("an address literal caused DNS queries")
	}
}

// A Send whose context ends mid-delivery returns (the stall would
// otherwise last the 3-minute data timeout), the recipient Deferred with the
// context's error reachable.
func TestSendContextDeadline(t *testing.T) {
	w := newDirectWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{StallDuringData: true})
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	body := testBody + strings.Repeat(strings.Repeat("q", 900)+"\r\n", 20000)
	res, err := m.Send(ctx, "a@sender.test", []string{"b@dest.test"}, strings.NewReader(body))
	if err == nil {
		t.Fatal("delivered to a stalled server")
	}
	r := wantStatus(t, res, "b@dest.test", Deferred)
	if !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Errorf("err %v does not hold the context's error", r.Err)
	}
}
