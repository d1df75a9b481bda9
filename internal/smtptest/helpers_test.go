package smtptest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/textproto"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// rawClient speaks SMTP by hand, for tests that need exact bytes on the wire.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	text *textproto.Conn
}

// dialRaw connects to addr and reads the greeting, expecting 220.
func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawClient{t: t, conn: conn, text: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	if _, _, err := c.text.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c
}

// cmd sends one command line and returns the reply, failing the test unless
// its code is expect.
func (c *rawClient) cmd(expect int, line string) string {
	c.t.Helper()
	if err := c.text.PrintfLine("%s", line); err != nil {
		c.t.Fatalf("%s: %v", line, err)
	}
	return c.reply(expect, line)
}

// reply reads a reply, failing the test unless its code is expect.
func (c *rawClient) reply(expect int, what string) string {
	c.t.Helper()
	code, msg, err := c.text.ReadResponse(0)
	if err != nil && code == 0 {
		c.t.Fatalf("%s: %v", what, err)
	}
	if code != expect {
		c.t.Fatalf("%s: got %d %s, want %d", what, code, msg, expect)
	}
	return msg
}

// write sends raw bytes.
func (c *rawClient) write(b string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(b)); err != nil {
		c.t.Fatal(err)
	}
}

// dial returns a go-smtp client that has said EHLO.
func dial(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

// send runs one transaction on c and returns the error of the first step
// that failed.
func send(c *smtp.Client, from string, to []string, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	return w.Close()
}

// wantCode fails the test unless err is an SMTP reply with code.
func wantCode(t *testing.T, err error, code int) *smtp.SMTPError {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code {
		t.Fatalf("err = %v, want SMTP reply %d", err, code)
	}
	return se
}

// containsFold reports whether b contains s, ignoring ASCII case.
func containsFold(b []byte, s string) bool {
	return bytes.Contains(bytes.ToUpper(b), bytes.ToUpper([]byte(s)))
}

// dialStartTLS connects, upgrades with STARTTLS and says EHLO again, which
// makes go-smtp's client run the handshake (it defers it to the next
// command).
func dialStartTLS(t *testing.T, addr string, cfg *tls.Config) (*smtp.Client, error) {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		return nil, err
	}
	return c, nil
}
