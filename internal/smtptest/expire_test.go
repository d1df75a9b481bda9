package smtptest

import (
	"crypto/tls"
	"errors"
	"io"
	"net/textproto"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/testpki"
)

// TimeOutSessions ends idle sessions as go-smtp's idle timeout does (421
// 4.4.2, then the connection closed), in plaintext and under TLS (STARTTLS
// and implicit), and also when a ReadTimeout is set: go-smtp then moves the
// read deadline before every read, which must not undo it.
func TestTimeOutSessions(t *testing.T) {
	ca := testpki.New(t)
	for _, tc := range []struct {
		name string
		opts Options
		// upgrade turns the plaintext session into TLS when the test
		// needs it, and returns what to read the server's replies from.
		upgrade func(t *testing.T, r *rawClient) *textproto.Conn
	}{
		{name: "plaintext", opts: Options{}},
		{name: "plaintext with ReadTimeout", opts: Options{ReadTimeout: time.Hour}},
		{name: "STARTTLS", opts: Options{TLS: ca.ServerConfig("mx.test")}, upgrade: startTLS(ca)},
		{name: "STARTTLS with ReadTimeout", opts: Options{TLS: ca.ServerConfig("mx.test"), ReadTimeout: time.Hour}, upgrade: startTLS(ca)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Start(t, tc.opts)
			r := dialRaw(t, s.Addr)
			r.cmd(250, "EHLO client.test")
			text := r.text
			if tc.upgrade != nil {
				text = tc.upgrade(t, r)
			}
			s.TimeOutSessions(t) // returns once the server has closed it
			code, msg, err := text.ReadResponse(421)
			if err != nil || msg != "4.4.2 Idle timeout, bye bye" {
				t.Fatalf("got %d %q, %v; want 421 4.4.2 Idle timeout", code, msg, err)
			}
			if _, err := text.ReadLine(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the 421: %v, want EOF", err)
			}
		})
	}
}

// Implicit TLS connections, and sessions that already ended, are handled
// too; a new connection after TimeOutSessions is served as usual.
func TestTimeOutSessionsImplicitTLSAndClosed(t *testing.T) {
	ca := testpki.New(t)
	s := Start(t, Options{TLS: ca.ServerConfig("mx.test"), ImplicitTLS: true})
	ended := dialImplicit(t, s.Addr, ca.ClientConfig("mx.test"))
	ended.PrintfLine("QUIT")
	if _, _, err := ended.ReadResponse(221); err != nil {
		t.Fatal(err)
	}
	idle := dialImplicit(t, s.Addr, ca.ClientConfig("mx.test"))
	s.TimeOutSessions(t)
	if code, _, err := idle.ReadResponse(421); err != nil {
		t.Fatalf("idle implicit-TLS session: %d, %v; want 421", code, err)
	}
	fresh := dialImplicit(t, s.Addr, ca.ClientConfig("mx.test"))
	fresh.PrintfLine("NOOP")
	if code, _, err := fresh.ReadResponse(250); err != nil {
		t.Fatalf("a session after TimeOutSessions: %d, %v", code, err)
	}
}

// startTLS upgrades a raw session and says EHLO again: the reply means the
// server has finished its side of the handshake (a TLS 1.3 client finishes
// first), so that TimeOutSessions finds it idle rather than mid-handshake.
func startTLS(ca *testpki.CA) func(t *testing.T, r *rawClient) *textproto.Conn {
	return func(t *testing.T, r *rawClient) *textproto.Conn {
		r.cmd(220, "STARTTLS")
		tc := tls.Client(r.conn, ca.ClientConfig("mx.test"))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		text := textproto.NewConn(tc)
		text.PrintfLine("EHLO client.test")
		if code, _, err := text.ReadResponse(250); err != nil {
			t.Fatalf("EHLO under TLS: %d %v", code, err)
		}
		return text
	}
}

func dialImplicit(t *testing.T, addr string, cfg *tls.Config) *textproto.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	text := textproto.NewConn(c)
	if _, _, err := text.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return text
}
