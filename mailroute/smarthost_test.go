package mailroute

import (
	"bytes"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

// relayWorld is a submission server on loopback with a test CA.
type relayWorld struct {
	t  *testing.T
	ca *testpki.CA
	s  *smtptest.Server
}

func newRelay(t *testing.T, opts smtptest.Options) *relayWorld {
	t.Helper()
	ca := testpki.New(t)
	if opts.TLS == nil && !opts.BrokenTLS {
		opts.TLS = ca.ServerConfig("127.0.0.1", "relay.test")
	}
	if opts.Auth == nil {
		opts.Auth = map[string]string{"user@sender.test": "s3cret"}
	}
	return &relayWorld{t: t, ca: ca, s: smtptest.Start(t, opts)}
}

func (w *relayWorld) relay() *Relay {
	return &Relay{
		Addr:      w.s.Addr,
		Username:  "user@sender.test",
		Password:  "s3cret",
		TLSConfig: &tls.Config{RootCAs: w.ca.Pool()},
	}
}

// allSmarthost routes every domain to the relay.
var allSmarthost = Rules{{Domains: []string{"*"}, Via: Relayed}}

func (w *relayWorld) mailer(r *Relay) *Mailer {
	w.t.Helper()
	m, err := New(Config{Hostname: "mail.sender.test", Router: allSmarthost, Relay: r})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { m.Close() })
	return m
}

func TestSmarthostDelivers(t *testing.T) {
	w := newRelay(t, smtptest.Options{RcptPolicy: rejectPrefix})
	m := w.mailer(w.relay())
	res, err := send(t, m, "a@sender.test", []string{"friend@gmail.com", "boss@acme.test", "reject@gmail.com"}, testBody)
	if err == nil {
		t.Fatal("no error for the rejected recipient")
	}
	for _, rcpt := range []string{"friend@gmail.com", "boss@acme.test"} {
		r := wantStatus(t, res, rcpt, Delivered)
		if r.Via != Relayed || r.Host != "127.0.0.1" || r.Fallback {
			t.Errorf("%s: %+v", rcpt, r)
		}
	}
	r := wantStatus(t, res, "reject@gmail.com", Failed)
	if errors.Is(r.Err, ErrRelayAuth) || !IsPermanent(r.Err) {
		t.Errorf("a per-recipient rejection is not a configuration error: %v", r.Err)
	}
	msgs := w.s.Messages()
	got := 0
	for _, msg := range msgs {
		if !msg.TLS || msg.AuthUser != "user@sender.test" || string(msg.Data) != testBody || msg.From != "a@sender.test" {
			t.Errorf("arrived: TLS %v user %q from %q data %q", msg.TLS, msg.AuthUser, msg.From, msg.Data)
		}
		got += len(msg.Rcpts)
	}
	if got != 2 {
		t.Errorf("%d recipients arrived, want 2", got)
	}
}

func rejectPrefix(rcpt string) *smtp.SMTPError {
	if strings.HasPrefix(rcpt, "reject") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	return nil
}

func TestSmarthostLoginMechanism(t *testing.T) {
	w := newRelay(t, smtptest.Options{})
	r := w.relay()
	r.Auth = sasl.NewLoginClient("user@sender.test", "s3cret")
	if _, err := send(t, w.mailer(r), "a@sender.test", []string{"b@dest.test"}, testBody); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(w.s.Transcript(), []byte("STARTTLS")) || len(w.s.Messages()) != 1 || w.s.Messages()[0].AuthUser != "user@sender.test" {
		t.Fatal("LOGIN did not authenticate")
	}
}

func TestSmarthostWrongPassword(t *testing.T) {
	w := newRelay(t, smtptest.Options{})
	r := w.relay()
	r.Password = "wrong"
	res, err := send(t, w.mailer(r), "a@sender.test", []string{"b@dest.test"}, testBody)
	if !errors.Is(err, ErrRelayAuth) {
		t.Fatalf("err %v, want ErrRelayAuth", err)
	}
	rr := wantStatus(t, res, "b@dest.test", Deferred) // kept, not bounced
	var e *Error
	if !errors.As(rr.Err, &e) || e.Code != 535 || e.Command != "AUTH" {
		t.Errorf("err %#v, want the 535 reply to AUTH", rr.Err)
	}
	if len(w.s.Messages()) != 0 {
		t.Error("mail went through with a wrong password")
	}
}

func TestSmarthostNoTLSNoCredentials(t *testing.T) {
	// The relay offers AUTH in plaintext and no STARTTLS: the password must
	// never be written.
	s := smtptest.Start(t, smtptest.Options{Auth: map[string]string{"user@sender.test": "s3cret"}, AllowInsecureAuth: true})
	w := &relayWorld{t: t, ca: testpki.New(t), s: s}
	res, err := send(t, w.mailer(w.relay()), "a@sender.test", []string{"b@dest.test"}, testBody)
	if !errors.Is(err, ErrRelayTLS) {
		t.Fatalf("err %v, want ErrRelayTLS", err)
	}
	wantStatus(t, res, "b@dest.test", Deferred)
	tr := w.s.Transcript()
	if bytes.Contains(bytes.ToUpper(tr), []byte("AUTH")) || bytes.Contains(tr, []byte("s3cret")) || bytes.Contains(tr, []byte("czNjcmV0")) {
		t.Fatalf("credentials crossed a plaintext connection:\n%s", tr)
	}
}

func TestSmarthostBrokenTLSNoCredentials(t *testing.T) {
	s := smtptest.Start(t, smtptest.Options{BrokenTLS: true, Auth: map[string]string{"user@sender.test": "s3cret"}, AllowInsecureAuth: true})
	w := &relayWorld{t: t, ca: testpki.New(t), s: s}
	_, err := send(t, w.mailer(w.relay()), "a@sender.test", []string{"b@dest.test"}, testBody)
	if !errors.Is(err, ErrRelayTLS) {
		t.Fatalf("err %v, want ErrRelayTLS", err)
	}
	if bytes.Contains(bytes.ToUpper(s.Transcript()), []byte("AUTH ")) {
		t.Fatal("AUTH written after a failed handshake")
	}
}

func TestSmarthostCertificateProblems(t *testing.T) {
	ca := testpki.New(t)
	for name, cert := range map[string]tls.Certificate{
		"wrong name":        ca.Issue("other.test"),
		"unknown authority": testpki.SelfSigned("127.0.0.1"),
		"expired":           ca.IssueExpired("127.0.0.1"),
	} {
		t.Run(name, func(t *testing.T) {
			s := smtptest.Start(t, smtptest.Options{
				TLS:  &tls.Config{Certificates: []tls.Certificate{cert}},
				Auth: map[string]string{"user@sender.test": "s3cret"},
			})
			w := &relayWorld{t: t, ca: ca, s: s}
			_, err := send(t, w.mailer(w.relay()), "a@sender.test", []string{"b@dest.test"}, testBody)
			if !errors.Is(err, ErrRelayTLS) {
				t.Fatalf("err %v, want ErrRelayTLS", err)
			}
			if !strings.Contains(err.Error(), "certificate") {
				t.Errorf("error does not say what is wrong with the certificate: %v", err)
			}
			if bytes.Contains(bytes.ToUpper(s.Transcript()), []byte("AUTH ")) || len(s.Messages()) != 0 {
				t.Fatal("AUTH or mail crossed a connection with a bad certificate")
			}
		})
	}
}

func TestSmarthostImplicitTLS(t *testing.T) {
	w := newRelay(t, smtptest.Options{ImplicitTLS: true})
	r := w.relay()
	r.ImplicitTLS = true
	if _, err := send(t, w.mailer(r), "a@sender.test", []string{"b@dest.test"}, testBody); err != nil {
		t.Fatal(err)
	}
	if msgs := w.s.Messages(); len(msgs) != 1 || !msgs[0].TLS || msgs[0].AuthUser == "" {
		t.Fatal("not delivered over implicit TLS with AUTH")
	}
	if len(w.s.Transcript()) != 0 {
		t.Errorf("plaintext bytes on an implicit-TLS connection: %q", w.s.Transcript())
	}
}

func TestSmarthostPoolReuse(t *testing.T) {
	w := newRelay(t, smtptest.Options{})
	m := w.mailer(w.relay())
	for i := range 10 {
		if _, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if n := w.s.Connections(); n != 1 {
		t.Fatalf("%d connections for ten sequential sends, want 1", n)
	}
	if n := bytes.Count(w.s.Transcript(), []byte("RSET")); n != 0 {
		t.Errorf("%d RSET commands between successful transactions, want 0", n)
	}
	m.Close()
	if n := len(w.s.Messages()); n != 10 {
		t.Fatalf("%d messages", n)
	}
}

func TestSmarthostPooledConnectionClosedByServer(t *testing.T) {
	w := newRelay(t, smtptest.Options{ReadTimeout: 200 * time.Millisecond})
	m := w.mailer(w.relay())
	if _, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // the server drops the idle session
	if _, err := send(t, m, "a@sender.test", []string{"c@dest.test"}, testBody); err != nil {
		t.Fatalf("send after the server closed the pooled session: %v", err)
	}
	if w.s.Connections() != 2 || len(w.s.Messages()) != 2 {
		t.Fatalf("connections %d messages %d, want 2 and 2", w.s.Connections(), len(w.s.Messages()))
	}
}

func TestSmarthostNotConfigured(t *testing.T) {
	m, err := New(Config{Hostname: "mail.sender.test", Router: allSmarthost})
	if err != nil {
		t.Fatal(err)
	}
	res, err := send(t, m, "a@sender.test", []string{"b@gmail.com"}, testBody)
	if !errors.Is(err, ErrNoRelay) {
		t.Fatalf("err %v, want ErrNoRelay", err)
	}
	wantStatus(t, res, "b@gmail.com", Deferred)
}

func TestSmarthostAuthRequiredWithoutCredentials(t *testing.T) {
	w := newRelay(t, smtptest.Options{})
	r := w.relay()
	r.Username, r.Password = "", ""
	_, err := send(t, w.mailer(r), "a@sender.test", []string{"b@dest.test"}, testBody)
	if !errors.Is(err, ErrRelayAuth) {
		t.Fatalf("err %v, want ErrRelayAuth (530 at MAIL)", err)
	}
}

func TestRelayInsecurePlaintextLoopback(t *testing.T) {
	if _, err := New(Config{Hostname: "h.test", Relay: &Relay{Addr: "smtp.example.com:25", InsecurePlaintextLoopback: true}}); err == nil {
		t.Fatal("InsecurePlaintextLoopback accepted for a remote relay")
	}
	s := smtptest.Start(t, smtptest.Options{})
	m, err := New(Config{Hostname: "h.test", Router: allSmarthost, Relay: &Relay{Addr: s.Addr, InsecurePlaintextLoopback: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody); err != nil {
		t.Fatal(err)
	}
	if len(s.Messages()) != 1 {
		t.Fatal("not delivered to the local relay")
	}
}

// maddy answers MAIL from an unauthenticated client with "502 5.7.0 Please
// authenticate first" rather than 530: still the configuration's fault, and
// the mail is kept.
func TestAuthRequiredReplies(t *testing.T) {
	for _, ce := range []*smtpclient.Error{
		{Code: 530, Enhanced: [3]int{5, 7, 0}, Message: "Authentication required", Command: "MAIL"},
		{Code: 502, Enhanced: [3]int{5, 7, 0}, Message: "Please authenticate first", Command: "MAIL"},
		{Code: 550, Enhanced: [3]int{5, 7, 1}, Message: "Client was not authenticated", Command: "MAIL"},
	} {
		if !authRequired(ce) {
			t.Errorf("%+v not recognised", ce)
		}
		e := smarthostError(ce)
		if !errors.Is(e, ErrRelayAuth) || e.Permanent {
			t.Errorf("%+v: %v permanent=%v", ce, e, e.Permanent)
		}
	}
	if authRequired(&smtpclient.Error{Code: 550, Enhanced: [3]int{5, 7, 1}, Message: "Relaying denied"}) {
		t.Error("a relay refusal taken for an auth requirement")
	}
}
