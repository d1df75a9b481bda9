package smtptest

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/testpki"
)

func TestStartTLS(t *testing.T) {
	ca := testpki.New(t)
	s := Start(t, Options{TLS: ca.ServerConfig("mx.test")})

	plain := dial(t, s.Addr)
	if ok, _ := plain.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	plain.Quit()

	c, err := dialStartTLS(t, s.Addr, ca.ClientConfig("mx.test"))
	if err != nil {
		t.Fatal(err)
	}
	if state, ok := c.TLSConnectionState(); !ok || !state.HandshakeComplete {
		t.Fatal("client is not under TLS")
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered again under TLS")
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "secret body\r\n"); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	m := s.WaitMessages(t, 1, 5*time.Second)[0]
	if !m.TLS || m.Conn != 2 || string(m.Data) != "secret body\r\n" {
		t.Errorf("TLS %v Conn %d Data %q", m.TLS, m.Conn, m.Data)
	}
	// The transcript holds the plaintext up to STARTTLS, nothing after.
	tr := s.ConnTranscript(2)
	if !strings.HasSuffix(string(tr), "STARTTLS\r\n") {
		t.Errorf("transcript does not end at STARTTLS: %q", tr)
	}
	if containsFold(s.Transcript(), "MAIL FROM") || containsFold(s.Transcript(), "secret") {
		t.Errorf("transcript shows what was sent under TLS: %q", s.Transcript())
	}
}

func TestStartTLSUntrustedCertificate(t *testing.T) {
	s := Start(t, Options{TLS: &tls.Config{Certificates: []tls.Certificate{testpki.SelfSigned("mx.test")}}})
	_, err := dialStartTLS(t, s.Addr, testpki.New(t).ClientConfig("mx.test"))
	if err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("err = %v, want an unknown authority error", err)
	}
}

func TestImplicitTLS(t *testing.T) {
	ca := testpki.New(t)
	s := Start(t, Options{TLS: ca.ServerConfig(), ImplicitTLS: true, Domain: "smtp.relay.test"})
	c, err := smtp.DialTLS(s.Addr, ca.ClientConfig("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if state, ok := c.TLSConnectionState(); !ok || !state.HandshakeComplete {
		t.Fatal("client is not under TLS")
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered on an implicit-TLS connection")
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	m := s.WaitMessages(t, 1, 5*time.Second)[0]
	if !m.TLS || m.Conn != 1 {
		t.Errorf("TLS %v Conn %d", m.TLS, m.Conn)
	}
	if tr := s.Transcript(); len(tr) != 0 {
		t.Errorf("implicit TLS recorded %d bytes of transcript", len(tr))
	}
	if s.Connections() != 1 {
		t.Errorf("Connections = %d", s.Connections())
	}
}

func TestBrokenTLS(t *testing.T) {
	s := Start(t, Options{BrokenTLS: true})
	c := dial(t, s.Addr)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	c.Quit()

	_, err := dialStartTLS(t, s.Addr, &tls.Config{ServerName: "mx.test"})
	var rhe tls.RecordHeaderError
	if !errors.As(err, &rhe) {
		t.Fatalf("err = %v, want the handshake to fail on a non-TLS record", err)
	}
	if s.Connections() != 2 || len(s.Attempts()) != 0 {
		t.Errorf("Connections %d, Attempts %d", s.Connections(), len(s.Attempts()))
	}
}

func TestBrokenImplicitTLS(t *testing.T) {
	s := Start(t, Options{BrokenTLS: true, ImplicitTLS: true})
	c, err := smtp.DialTLS(s.Addr, &tls.Config{ServerName: "mx.test"})
	if err == nil {
		defer c.Close()
		err = c.Hello("client.test")
	}
	var rhe tls.RecordHeaderError
	if !errors.As(err, &rhe) {
		t.Fatalf("err = %v, want the handshake to fail on a non-TLS record", err)
	}
}

// submission starts a server requiring AUTH over STARTTLS and returns it with
// a function dialing it under verified TLS.
func submission(t *testing.T, opts Options) (*Server, func() *smtp.Client) {
	ca := testpki.New(t)
	opts.TLS = ca.ServerConfig("smtp.relay.test")
	if opts.Auth == nil {
		opts.Auth = map[string]string{"user": "pass"}
	}
	s := Start(t, opts)
	return s, func() *smtp.Client {
		c, err := dialStartTLS(t, s.Addr, ca.ClientConfig("smtp.relay.test"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

func TestAuthPlain(t *testing.T) {
	s, dialTLS := submission(t, Options{})
	c := dialTLS()
	if !c.SupportsAuth("PLAIN") || !c.SupportsAuth("LOGIN") {
		t.Fatal("PLAIN and LOGIN not both offered")
	}
	if err := c.Auth(sasl.NewPlainClient("", "user", "pass")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitMessages(t, 1, 5*time.Second)[0]; m.AuthUser != "user" || !m.TLS {
		t.Errorf("AuthUser %q TLS %v", m.AuthUser, m.TLS)
	}
}

func TestAuthLogin(t *testing.T) {
	s, dialTLS := submission(t, Options{})
	c := dialTLS()
	// go-sasl's LOGIN client sends the user name as an initial response.
	if err := c.Auth(sasl.NewLoginClient("user", "pass")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitMessages(t, 1, 5*time.Second)[0]; m.AuthUser != "user" {
		t.Errorf("AuthUser %q", m.AuthUser)
	}
}

// TestAuthLoginWithoutInitialResponse walks the LOGIN dialogue the long way,
// as older clients do.
func TestAuthLoginWithoutInitialResponse(t *testing.T) {
	s := Start(t, Options{Auth: map[string]string{"user": "pass"}, AllowInsecureAuth: true})
	r := dialRaw(t, s.Addr)
	r.cmd(250, "EHLO client.test")
	if msg := r.cmd(334, "AUTH LOGIN"); msg != "VXNlcm5hbWU6" { // "Username:"
		t.Errorf("first challenge %q", msg)
	}
	if msg := r.cmd(334, "dXNlcg=="); msg != "UGFzc3dvcmQ6" { // "user" → "Password:"
		t.Errorf("second challenge %q", msg)
	}
	r.cmd(235, "cGFzcw==") // "pass"
}

func TestAuthWrongPassword(t *testing.T) {
	_, dialTLS := submission(t, Options{})
	c := dialTLS()
	se := wantCode(t, c.Auth(sasl.NewPlainClient("", "user", "wrong")), 535)
	if se.EnhancedCode != (smtp.EnhancedCode{5, 7, 8}) {
		t.Errorf("enhanced code %v, want 5.7.8", se.EnhancedCode)
	}
	wantCode(t, dialTLS().Auth(sasl.NewLoginClient("nobody", "pass")), 535)
	wantCode(t, dialTLS().Auth(sasl.NewPlainClient("someone-else", "user", "pass")), 535)
}

func TestAuthRequiredForMail(t *testing.T) {
	_, dialTLS := submission(t, Options{})
	se := wantCode(t, dialTLS().Mail("a@example.org", nil), 530)
	if se.EnhancedCode != (smtp.EnhancedCode{5, 7, 0}) {
		t.Errorf("enhanced code %v, want 5.7.0", se.EnhancedCode)
	}

	s, dialOptional := submission(t, Options{AuthOptional: true})
	if err := send(dialOptional(), "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitMessages(t, 1, 5*time.Second)[0]; m.AuthUser != "" {
		t.Errorf("AuthUser %q", m.AuthUser)
	}
}

func TestAuthNotOfferedInPlaintext(t *testing.T) {
	s, _ := submission(t, Options{})
	c := dial(t, s.Addr)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before STARTTLS")
	}
	// A client that tries anyway is refused, and the attempt is on record.
	r := dialRaw(t, s.Addr)
	r.cmd(250, "EHLO client.test")
	r.cmd(523, "AUTH PLAIN AHVzZXIAcGFzcw==")
	if !containsFold(s.Transcript(), "AUTH PLAIN") {
		t.Errorf("transcript lacks the plaintext AUTH: %q", s.Transcript())
	}
}

func TestAllowInsecureAuth(t *testing.T) {
	s := Start(t, Options{Auth: map[string]string{"user": "pass"}, AllowInsecureAuth: true})
	c := dial(t, s.Addr)
	if err := c.Auth(sasl.NewPlainClient("", "user", "pass")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitMessages(t, 1, 5*time.Second)[0]; m.AuthUser != "user" || m.TLS {
		t.Errorf("AuthUser %q TLS %v", m.AuthUser, m.TLS)
	}
	// This is what a test of a careless client looks for.
	if !containsFold(s.Transcript(), "AUTH PLAIN") {
		t.Errorf("transcript lacks AUTH: %q", s.Transcript())
	}
}

// TestNoAuthInTranscriptUnderTLS is the assertion transport tests make: a
// client that authenticates only after STARTTLS leaves no AUTH in the
// transcript.
func TestNoAuthInTranscriptUnderTLS(t *testing.T) {
	s, dialTLS := submission(t, Options{})
	c := dialTLS()
	if err := c.Auth(sasl.NewPlainClient("", "user", "pass")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	s.WaitMessages(t, 1, 5*time.Second)
	if tr := s.Transcript(); containsFold(tr, "AUTH") || !containsFold(tr, "STARTTLS") {
		t.Fatalf("transcript = %q", tr)
	}
}
