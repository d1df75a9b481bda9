package peertest

// Tests of maddy's submission endpoints as internal/peers/maddy.sh sets them
// up (MAILROUTE_PEERS=1), with the standard library's net/smtp only.

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/smtp"
	"slices"
	"strings"
	"testing"
)

// maddyMessage is testMessage with header fields of unusual shape (no space
// after the colon, folded, trailing white space), which maddy must store as
// they came, and its long line cut to 3,900 octets: maddy refuses lines
// longer than 4,000 (smtp_max_line_length).
func maddyMessage(from, to, id string) []byte {
	msg := testMessage(from, to, id)
	msg = bytes.Replace(msg, []byte("MIME-Version:"),
		[]byte("X-Odd:no space\r\nX-Folded: a\r\n\tb\r\n  c\r\nX-Trailing: v \t\r\nMIME-Version:"), 1)
	return bytes.Replace(msg, []byte(strings.Repeat("0123456789", 500)), []byte(strings.Repeat("0123456789", 390)), 1)
}

func TestMaddySubmission(t *testing.T) {
	e := Require(t)
	pool := e.MaddyCertPool(t)
	host, _, _ := net.SplitHostPort(e.MaddySubmissionAddr)
	tc := &tls.Config{RootCAs: pool, ServerName: host}

	dialSTARTTLS, dialTLS := submissionDialers(e.MaddySubmissionAddr, e.MaddySubmissionsAddr, tc, "client.peertest.test")
	auth := func(t *testing.T, c *smtp.Client) {
		t.Helper()
		if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") {
			t.Errorf("AUTH after TLS = %v %q", ok, mechs)
		}
		if err := c.Auth(smtp.PlainAuth("", e.MaddyUser, e.MaddyPass, host)); err != nil {
			t.Fatalf("AUTH: %v", err)
		}
	}

	for _, tt := range []struct {
		name string
		dial func(*testing.T) *smtp.Client
	}{
		{"submission", dialSTARTTLS},
		{"submissions", dialTLS},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.dial(t)
			auth(t, c)
			const from = "app@peertest.test"
			// Any recipient domain; one file for the message.
			rcpts := []string{"someone@gmail.com", "User@Example.ORG"}
			id := uniqueID(t)
			msg := maddyMessage(from, rcpts[0], id)
			send(t, c, from, rcpts, msg)
			m := e.WaitMaddy(t, e.MaddyStore, MaddyHeaderIs("Message-ID", "<"+id+"@peertest.test>"), waitTimeout)
			// maddy lower-cases the domains of the recipients it hands on.
			wantTo := []string{"someone@gmail.com", "User@example.org"}
			if m.From != from || m.ReturnPath != from || !slices.Equal(m.To, wantTo) {
				t.Errorf("envelope: from %q Return-Path %q to %q; want %q, %q", m.From, m.ReturnPath, m.To, from, wantTo)
			}
			if !m.HasRcpt("user@EXAMPLE.org") {
				t.Error("HasRcpt is not case-insensitive")
			}
			// The message has no Date: submission added one.
			if !slices.Equal(m.Added, []string{"Date"}) {
				t.Errorf("Added = %q, want [Date]", m.Added)
			}
			if got := m.Sent(); !bytes.Equal(got, msg) {
				t.Errorf("stored message differs from the one sent\n got: %q\nwant: %q", trunc(got), trunc(msg))
			}
			// net/smtp asks for SMTPUTF8 when offered: UTF8ESMTPS.
			if !strings.Contains(m.Received, "by mx.example.org (envelope-sender <"+from+">) with UTF8ESMTPS id ") {
				t.Errorf("Received = %q", m.Received)
			}
		})
	}

	t.Run("null sender, Date and Message-ID kept", func(t *testing.T) {
		c := dialSTARTTLS(t)
		auth(t, c)
		id := uniqueID(t)
		msg := append([]byte("Date: Sat, 28 Nov 2026 02:48:08 +0000\r\n"), maddyMessage("mailer-daemon@peertest.test", "x@y.test", id)...)
		send(t, c, "", []string{"x@y.test"}, msg)
		m := e.WaitMaddy(t, e.MaddyStore, MaddyHeaderIs("Message-ID", "<"+id+"@peertest.test>"), waitTimeout)
		if m.From != "" || m.ReturnPath != "" || !slices.Equal(m.To, []string{"x@y.test"}) || len(m.Added) != 0 {
			t.Errorf("from %q Return-Path %q to %q added %q", m.From, m.ReturnPath, m.To, m.Added)
		}
		if !bytes.Equal(m.Sent(), msg) || !bytes.Equal(m.Message(), msg) {
			t.Errorf("stored message differs from the one sent\n got: %q\nwant: %q", trunc(m.Sent()), trunc(msg))
		}
		if !bytes.Contains(m.Raw, []byte("X-Envelope-From: <>\r\n")) || strings.Contains(m.Received, "envelope-sender") {
			t.Errorf("null sender:\n%s", trunc(m.Raw))
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		c := dialSTARTTLS(t)
		err := c.Auth(smtp.PlainAuth("", e.MaddyUser, "wrong", host))
		if smtpCode(err) != 454 {
			t.Fatalf("AUTH with a wrong password = %v, want maddy's 454", err)
		}
	})
	t.Run("no auth", func(t *testing.T) {
		c := dialSTARTTLS(t)
		err := c.Mail("app@peertest.test")
		if err == nil {
			err = c.Rcpt("someone@gmail.com")
		}
		if code := smtpCode(err); code < 500 {
			t.Fatalf("relaying without AUTH = %v, want a 5xx", err)
		}
	})
	// What maddy refuses at the end of data (and Postfix would take).
	for _, tt := range []struct{ name, msg, reply string }{
		{"no From", "Subject: no From\r\n\r\nbody\r\n", "5.6.0 Message does not contains a From header field"},
		{"null From", "From: <>\r\n\r\nbody\r\n", "5.6.0 Invalid address in From"},
		{"line over 4000 octets", "From: a@peertest.test\r\n\r\n" + strings.Repeat("x", 4001) + "\r\n", "5.0.0 Internal server error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialSTARTTLS(t)
			auth(t, c)
			if err := c.Mail("app@peertest.test"); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("someone@gmail.com"); err != nil {
				t.Fatal(err)
			}
			w, err := c.Data()
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte(tt.msg))
			err = w.Close()
			if smtpCode(err) != 554 || !strings.Contains(err.Error(), tt.reply) {
				t.Fatalf("end of data: %v, want 554 %s", err, tt.reply)
			}
		})
	}
	t.Run("certificate", func(t *testing.T) {
		for _, name := range []string{"mx.example.org", "localhost", "127.0.0.1"} {
			conn, err := tls.Dial("tcp", e.MaddySubmissionsAddr, &tls.Config{RootCAs: pool, ServerName: name})
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			conn.Close()
		}
		if conn, err := tls.Dial("tcp", e.MaddySubmissionsAddr, &tls.Config{RootCAs: pool, ServerName: "mx.other.test"}); err == nil {
			conn.Close()
			t.Error("certificate verified for mx.other.test")
		}
	})
}
