package mailroute

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

// SendMail has net/smtp's signature exactly: a method value and the
// package-level function both assign to net/smtp's function type.
var (
	_ func(string, smtp.Auth, string, []string, []byte) error = smtp.SendMail
	_ func(string, smtp.Auth, string, []string, []byte) error = (*Mailer)(nil).SendMail
	_ func(string, smtp.Auth, string, []string, []byte) error = SendMail
)

// dropinBody has a line that must be dot-stuffed on the wire.
const dropinBody = "From: a@sender.test\r\nTo: friend@gmail.com, pal@small.test\r\nSubject: drop-in\r\n\r\nHello.\r\n.leading dot\r\n"

// dropinWorld is the Internet as SendMail meets it, all on loopback: DNS, an
// MX for small.test, and a submission relay known as relay.test (a
// certificate from a test CA for that name, AUTH required).
type dropinWorld struct {
	*directWorld
	ca    *testpki.CA
	mx    *smtptest.Server
	relay *smtptest.Server
}

const (
	relayAddr = "relay.test:587"
	relayUser = "user@sender.test"
	relayPass = "s3cret"
)

func newDropinWorld(t *testing.T, relayOpts smtptest.Options) *dropinWorld {
	t.Helper()
	w := &dropinWorld{directWorld: newDirectWorld(t), ca: testpki.New(t)}
	w.dns.MX("small.test", "mx.small.test")
	w.mx = w.directWorld.mx("mx.small.test", "127.0.0.1", smtptest.Options{})
	if relayOpts.TLS == nil && !relayOpts.AllowInsecureAuth {
		relayOpts.TLS = w.ca.ServerConfig("relay.test", "127.0.0.1")
	}
	if relayOpts.Auth == nil {
		relayOpts.Auth = map[string]string{relayUser: relayPass}
	}
	w.relay = smtptest.Start(t, relayOpts)
	return w
}

// mailer returns a Mailer without Config.Relay, routing by
// DefaultRouter, that reaches relay.test on loopback and trusts the CA.
func (w *dropinWorld) mailer() *Mailer {
	w.t.Helper()
	m, err := New(Config{
		Hostname: "mail.sender.test",
		Resolver: DNSServer(w.dns.Addr),
		Direct:   DirectOptions{Port: w.port},
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { m.Close() })
	m.adhoc.tlsConfig = &tls.Config{RootCAs: w.ca.Pool()}
	m.adhoc.dialer = loopbackDialer{relayAddr: w.relay.Addr}
	return m
}

// loopbackDialer reaches the names it knows on their loopback addresses
// and refuses every other, so no test traffic leaves the machine.
type loopbackDialer map[string]string

func (d loopbackDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	real, ok := d[addr]
	if !ok {
		return nil, fmt.Errorf("loopbackDialer: %s is not a test address", addr)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, real)
}

// recordingAuth is a net/smtp Auth that records what it was asked.
type recordingAuth struct {
	smtp.Auth
	mu    sync.Mutex
	infos []smtp.ServerInfo
}

func (a *recordingAuth) Start(info *smtp.ServerInfo) (string, []byte, error) {
	a.mu.Lock()
	a.infos = append(a.infos, *info)
	a.mu.Unlock()
	return a.Auth.Start(info)
}

func (a *recordingAuth) asked() []smtp.ServerInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.infos)
}

// The relay given to SendMail takes Gmail, authenticated with PlainAuth
// over verified STARTTLS; the small domain's MX gets its recipient direct.
func TestSendMailRelayAndDirect(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	m := w.mailer()
	auth := &recordingAuth{Auth: smtp.PlainAuth("", relayUser, relayPass, "relay.test")}
	if err := m.SendMail(relayAddr, auth, "a@sender.test", []string{"friend@gmail.com", "pal@small.test"}, []byte(dropinBody)); err != nil {
		t.Fatal(err)
	}

	relayed := w.relay.Messages()
	if len(relayed) != 1 {
		t.Fatalf("relay got %d messages, want 1", len(relayed))
	}
	r := relayed[0]
	if !r.TLS || r.AuthUser != relayUser || r.From != "a@sender.test" || !slices.Equal(r.Rcpts, []string{"friend@gmail.com"}) {
		t.Errorf("relay: TLS %v user %q from %q rcpts %q", r.TLS, r.AuthUser, r.From, r.Rcpts)
	}
	if string(r.Data) != dropinBody {
		t.Errorf("relay data %q, want %q", r.Data, dropinBody)
	}
	direct := w.mx.Messages()
	if len(direct) != 1 {
		t.Fatalf("MX got %d messages, want 1", len(direct))
	}
	if d := direct[0]; d.From != "a@sender.test" || !slices.Equal(d.Rcpts, []string{"pal@small.test"}) || string(d.Data) != dropinBody {
		t.Errorf("MX: from %q rcpts %q data %q", d.From, d.Rcpts, d.Data)
	}

	// PlainAuth was asked as net/smtp asks it, with the real TLS state.
	asked := auth.asked()
	if len(asked) != 1 || asked[0].Name != "relay.test" || !asked[0].TLS || !slices.Equal(asked[0].Auth, []string{"PLAIN", "LOGIN"}) {
		t.Errorf("Auth asked with %+v", asked)
	}
	// Nothing of the AUTH exchange crossed the wire in plaintext.
	if tr := w.relay.Transcript(); !bytes.Contains(tr, []byte("STARTTLS")) || bytes.Contains(tr, []byte("AUTH")) {
		t.Errorf("relay plaintext transcript %q", tr)
	}
}

// Repeated calls reuse one authenticated session, even when each call
// makes its own PlainAuth, as net/smtp code usually does.
func TestSendMailReusesRelaySession(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	m := w.mailer()
	for i := range 3 {
		body := fmt.Sprintf("Subject: %d\r\n\r\nHello.\r\n", i)
		auth := smtp.PlainAuth("", relayUser, relayPass, "relay.test")
		if err := m.SendMail(relayAddr, auth, "a@sender.test", []string{"friend@gmail.com"}, []byte(body)); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := len(w.relay.Messages()); n != 3 {
		t.Errorf("%d messages, want 3", n)
	}
	if n := w.relay.Connections(); n != 1 {
		t.Errorf("%d connections to the relay, want 1", n)
	}
}

// Concurrent calls share one pool (run with -race).
func TestSendMailConcurrent(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	m := w.mailer()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			auth := smtp.PlainAuth("", relayUser, relayPass, "relay.test")
			errs <- m.SendMail(relayAddr, auth, "a@sender.test", []string{"friend@gmail.com", "pal@small.test"}, []byte(testBody))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if len(w.relay.Messages()) != 8 || len(w.mx.Messages()) != 8 || len(m.adhoc.relays) != 1 {
		t.Errorf("relay %d, MX %d messages; %d pools", len(w.relay.Messages()), len(w.mx.Messages()), len(m.adhoc.relays))
	}
}

// Different credentials get sessions of their own.
func TestSendMailSessionsPerAuth(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{Auth: map[string]string{"one@sender.test": "p1", "two@sender.test": "p2"}})
	m := w.mailer()
	users := []string{"one@sender.test", "two@sender.test", "one@sender.test"}
	for _, u := range users {
		pass := map[string]string{"one@sender.test": "p1", "two@sender.test": "p2"}[u]
		if err := m.SendMail(relayAddr, smtp.PlainAuth("", u, pass, "relay.test"), u, []string{"friend@gmail.com"}, []byte(testBody)); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
	var got []string
	for _, msg := range w.relay.Messages() {
		got = append(got, msg.AuthUser)
	}
	if !slices.Equal(got, users) {
		t.Errorf("authenticated as %q, want %q", got, users)
	}
	if n := w.relay.Connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// A relay that is not on loopback must offer STARTTLS: net/smtp would go on
// in plaintext, SendMail stops before AUTH and before any mail.
func TestSendMailRelayWithoutTLS(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{AllowInsecureAuth: true}) // plaintext, AUTH offered
	m := w.mailer()
	auth := &recordingAuth{Auth: smtp.PlainAuth("", relayUser, relayPass, "relay.test")}
	err := m.SendMail(relayAddr, auth, "a@sender.test", []string{"friend@gmail.com"}, []byte(testBody))
	if !errors.Is(err, ErrRelayTLS) || IsPermanent(err) {
		t.Fatalf("err %v, want ErrRelayTLS, temporary", err)
	}
	if tr := w.relay.Transcript(); bytes.Contains(tr, []byte("AUTH")) || bytes.Contains(tr, []byte("MAIL")) {
		t.Errorf("sent in plaintext: %q", tr)
	}
	if len(auth.asked()) != 0 || len(w.relay.Messages()) != 0 {
		t.Errorf("Auth asked %+v; %d messages", auth.asked(), len(w.relay.Messages()))
	}
}

// A relay on loopback (a local Postfix) is used as net/smtp users use it:
// in plaintext when it offers no STARTTLS, with or without PlainAuth (which
// allows clear text to localhost), and encrypted without verification when
// it does offer STARTTLS.
func TestSendMailLoopbackRelay(t *testing.T) {
	for _, tt := range []struct {
		name   string
		opts   smtptest.Options
		auth   func(host string) smtp.Auth
		tls    bool
		asUser string
	}{
		{name: "plaintext, no auth", opts: smtptest.Options{}, auth: func(string) smtp.Auth { return nil }},
		{name: "plaintext, PlainAuth", opts: smtptest.Options{Auth: map[string]string{"u": "p"}, AllowInsecureAuth: true},
			auth: func(host string) smtp.Auth { return smtp.PlainAuth("", "u", "p", host) }, asUser: "u"},
		{name: "STARTTLS from an unknown CA", opts: smtptest.Options{TLS: testpki.New(t).ServerConfig("elsewhere.test"),
			Auth: map[string]string{"u": "p"}}, auth: func(host string) smtp.Auth { return smtp.PlainAuth("", "u", "p", host) },
			tls: true, asUser: "u"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			relay := smtptest.Start(t, tt.opts)
			m, _ := newTestMailer(t, Config{})
			if err := m.SendMail(relay.Addr, tt.auth(relay.Host()), "a@sender.test", []string{"friend@gmail.com"}, []byte(testBody)); err != nil {
				t.Fatal(err)
			}
			msgs := relay.Messages()
			if len(msgs) != 1 || msgs[0].TLS != tt.tls || msgs[0].AuthUser != tt.asUser || string(msgs[0].Data) != testBody {
				t.Fatalf("relay got %+v", msgs)
			}
		})
	}
}

// PlainAuth's own guard decides: told the truth about an unencrypted
// session to a host that is not localhost, it refuses, and no AUTH is
// written. (SendMail never lets it get that far, since such a relay must
// offer TLS; the adapter is tested on an opted-in loopback session.)
func TestNetSMTPAuthKeepsPlainAuthGuard(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Auth: map[string]string{"u": "p"}, AllowInsecureAuth: true})
	ctx := context.Background()
	_, err := smtpclient.Dial(ctx, srv.Addr, "relay.example", &smtpclient.Config{
		TLS: smtpclient.TLSNone, AllowInsecureAuth: true,
		AuthFor: netSMTPAuth(smtp.PlainAuth("", "u", "p", "relay.example"), "relay.example"),
	})
	if !errors.Is(err, smtpclient.ErrAuthFailed) || !strings.Contains(err.Error(), "unencrypted connection") {
		t.Fatalf("err %v, want PlainAuth's refusal", err)
	}
	if e := smarthostError(err); !errors.Is(e, ErrRelayAuth) || e.Permanent || e.Command != "AUTH" {
		t.Errorf("classified as %#v, want a temporary ErrRelayAuth", e)
	}
	if tr := srv.Transcript(); bytes.Contains(tr, []byte("AUTH")) {
		t.Errorf("AUTH on the wire: %q", tr)
	}

	// The same session to "localhost": PlainAuth allows it, and the
	// exchange completes.
	c, err := smtpclient.Dial(ctx, srv.Addr, "localhost", &smtpclient.Config{
		TLS: smtpclient.TLSNone, AllowInsecureAuth: true,
		AuthFor: netSMTPAuth(smtp.PlainAuth("", "u", "p", "localhost"), "localhost"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !bytes.Contains(srv.Transcript(), []byte("AUTH PLAIN")) {
		t.Errorf("no AUTH PLAIN: %q", srv.Transcript())
	}
}

// A multi-step mechanism: net/smtp's CRAMMD5Auth answers the challenge
// through Next.
func TestNetSMTPAuthChallenge(t *testing.T) {
	a := netSMTPAuth(smtp.CRAMMD5Auth("tim", "tanstaaftanstaaf"), "mx.test")
	cl, err := a(false, []string{"CRAM-MD5"})
	if err != nil {
		t.Fatal(err)
	}
	mech, ir, err := cl.Start()
	if mech != "CRAM-MD5" || ir != nil || err != nil {
		t.Fatalf("Start = %q %q %v", mech, ir, err)
	}
	// RFC 2195 §2.
	resp, err := cl.Next([]byte("<1896.697170952@postoffice.reston.mci.net>"))
	if err != nil || string(resp) != "tim b913a602c7eda7a495b4e6e7334d3890" {
		t.Errorf("Next = %q, %v", resp, err)
	}
}

// With Config.Relay set, addr and a are ignored.
func TestSendMailConfiguredSmarthost(t *testing.T) {
	w := newRelay(t, smtptest.Options{})
	m := w.mailer(w.relay())
	if err := m.SendMail("nowhere.invalid:587", nil, "a@sender.test", []string{"friend@gmail.com"}, []byte(testBody)); err != nil {
		t.Fatal(err)
	}
	if msgs := w.s.Messages(); len(msgs) != 1 || msgs[0].AuthUser != "user@sender.test" {
		t.Errorf("relay got %+v", msgs)
	}
	if len(m.adhoc.relays) != 0 {
		t.Errorf("%d ad-hoc relays made", len(m.adhoc.relays))
	}
}

func TestSendMailBadAddr(t *testing.T) {
	m, _ := newTestMailer(t, Config{})
	for _, addr := range []string{"relay.test", ":587", "relay.test:0", "relay.test:smtp"} {
		err := m.SendMail(addr, nil, "a@sender.test", []string{"friend@gmail.com"}, []byte(testBody))
		if err == nil || !strings.Contains(err.Error(), "SendMail") {
			t.Errorf("%q: err %v", addr, err)
		}
	}
	if len(m.adhoc.relays) != 0 {
		t.Errorf("%d relays kept for bad addresses", len(m.adhoc.relays))
	}
}

// Close ends the relays' idle sessions; SendMail after Close fails without
// connecting.
func TestSendMailClose(t *testing.T) {
	relay := smtptest.Start(t, smtptest.Options{})
	m, _ := newTestMailer(t, Config{})
	if err := m.SendMail(relay.Addr, nil, "a@sender.test", []string{"friend@gmail.com"}, []byte(testBody)); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if tr := relay.ConnTranscript(1); !bytes.HasSuffix(tr, []byte("QUIT\r\n")) {
		t.Errorf("idle session not ended with QUIT: %q", tr)
	}
	err := m.SendMail(relay.Addr, nil, "a@sender.test", []string{"friend@gmail.com"}, []byte(testBody))
	if !errors.Is(err, ErrClosed) || relay.Connections() != 1 {
		t.Errorf("after Close: err %v, %d connections", err, relay.Connections())
	}
}

// Auths that never compare equal cannot pile up pools: the least recently
// used is closed.
func TestSendMailEvictsOldestRelay(t *testing.T) {
	users := make(map[string]string)
	for i := range maxAdhocRelays + 1 {
		users[fmt.Sprintf("u%d", i)] = "p"
	}
	relay := smtptest.Start(t, smtptest.Options{Auth: users, AllowInsecureAuth: true})
	m, _ := newTestMailer(t, Config{})
	send := func(i int) {
		t.Helper()
		auth := smtp.PlainAuth("", fmt.Sprintf("u%d", i), "p", relay.Host())
		if err := m.SendMail(relay.Addr, auth, "a@sender.test", []string{"friend@gmail.com"}, []byte(testBody)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range maxAdhocRelays + 1 {
		send(i)
	}
	if n := len(m.adhoc.relays); n != maxAdhocRelays {
		t.Errorf("%d relays kept, want %d", n, maxAdhocRelays)
	}
	if tr := relay.ConnTranscript(1); !bytes.HasSuffix(tr, []byte("QUIT\r\n")) {
		t.Errorf("evicted session not ended: %q", tr)
	}
	send(1) // still pooled: no new connection
	if n := relay.Connections(); n != maxAdhocRelays+1 {
		t.Errorf("%d connections, want %d", n, maxAdhocRelays+1)
	}
}

// The package-level SendMail works as the method does, on a default
// Mailer: Gmail goes to the given loopback relay without any DNS lookup.
func TestPackageSendMail(t *testing.T) {
	if _, err := defaultMailer(); err != nil {
		t.Skipf("no default Mailer on this host: %v", err)
	}
	relay := smtptest.Start(t, smtptest.Options{})
	if err := SendMail(relay.Addr, nil, "a@sender.test", []string{"friend@gmail.com"}, []byte(testBody)); err != nil {
		t.Fatal(err)
	}
	if msgs := relay.Messages(); len(msgs) != 1 || string(msgs[0].Data) != testBody {
		t.Errorf("relay got %+v", msgs)
	}
}
