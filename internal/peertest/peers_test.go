package peertest

// Tests against the real peers (MAILROUTE_PEERS=1): they check the setup of
// internal/peers itself, with nothing but the standard library's net/smtp and
// miekg/dns, so a failure here is the environment's, not mailroute's.

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const waitTimeout = 10 * time.Second

// uniqueID returns a fresh Message-ID local part.
func uniqueID(t *testing.T) string {
	return fmt.Sprintf("%s.%s", strings.NewReplacer("/", ".", " ", "_").Replace(t.Name()), rand.Text()[:12])
}

// testMessage builds a CRLF message with the given Message-ID and a body that
// exercises dot stuffing, a long line, 8-bit text and trailing white space.
func testMessage(from, to, id string) []byte {
	return []byte("From: <" + from + ">\r\n" +
		"To: <" + to + ">\r\n" +
		"Subject: peertest\r\n" +
		"Message-ID: <" + id + "@peertest.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"Hello.\r\n" +
		".a line that starts with a dot\r\n" +
		"..two dots\r\n" +
		".\r\n" + // a lone dot inside the body
		"trailing space \t\r\n" +
		"grüße\r\n" +
		strings.Repeat("0123456789", 500) + "\r\n" +
		"\r\n" +
		"end\r\n")
}

// send runs one SMTP transaction on c and quits.
func send(t *testing.T, c *smtp.Client, from string, to []string, msg []byte) {
	t.Helper()
	if err := c.Mail(from); err != nil {
		t.Fatalf("MAIL FROM: %v", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			t.Fatalf("RCPT TO:<%s>: %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := w.Write(msg); err != nil {
		t.Fatalf("writing the message: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
}

// dialReceiver connects to Postfix's receiver on ip and does STARTTLS with
// tc (nil: no STARTTLS).
func dialReceiver(t *testing.T, e Env, ip string, tc *tls.Config) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(e.PostfixAddr(ip))
	if err != nil {
		t.Fatalf("dial %s: %v", e.PostfixAddr(ip), err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.peertest.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	if tc != nil {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			t.Fatal("Postfix does not offer STARTTLS")
		}
		if err := c.StartTLS(tc); err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
	}
	return c
}

func checkDelivered(t *testing.T, m *Mail, from, rcpt string, msg []byte) {
	t.Helper()
	if m.ReturnPath != from || m.DeliveredTo != rcpt || m.OriginalTo != rcpt {
		t.Errorf("envelope: Return-Path %q Delivered-To %q X-Original-To %q; want %q, %q, %q",
			m.ReturnPath, m.DeliveredTo, m.OriginalTo, from, rcpt, rcpt)
	}
	if got := m.Sent(); string(got) != string(msg) {
		t.Errorf("stored message differs from the one sent\n got: %q\nwant: %q", trunc(got), trunc(msg))
	}
}

func trunc(b []byte) string {
	if len(b) > 600 {
		return string(b[:300]) + " ... " + string(b[len(b)-300:])
	}
	return string(b)
}

func TestPostfixReceivesByteForByte(t *testing.T) {
	e := Require(t)
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		t.Run(ip, func(t *testing.T) {
			t.Parallel()
			const from, rcpt = "sender@peertest.test", "user@example.org"
			id := uniqueID(t)
			msg := testMessage(from, rcpt, id)
			c := dialReceiver(t, e, ip, &tls.Config{InsecureSkipVerify: true})
			if ok, _ := c.Extension("AUTH"); ok {
				t.Error("the receiver offers AUTH; it should be a plain MX")
			}
			send(t, c, from, []string{rcpt}, msg)
			m := e.WaitMaildir(t, e.PostfixMaildir, HeaderIs("Message-ID", "<"+id+"@peertest.test>"), waitTimeout)
			checkDelivered(t, m, from, rcpt, msg)
			// net/smtp asks for SMTPUTF8 when offered: UTF8SMTPS, not ESMTPS.
			if !strings.Contains(string(m.Raw), "(Postfix) with UTF8SMTPS id") {
				t.Errorf("Received field does not show STARTTLS:\n%s", trunc(m.Raw))
			}
		})
	}
}

func TestPostfixWithoutTLSAndNullSender(t *testing.T) {
	e := Require(t)
	id := uniqueID(t)
	// Two recipients in two of the accepted domains: one file each.
	rcpts := []string{"a@mx-test.internal", "b@amx.test"}
	msg := testMessage("", rcpts[0], id)
	send(t, dialReceiver(t, e, "127.0.0.1", nil), "", rcpts, msg)
	for _, r := range rcpts {
		m := e.WaitMaildir(t, e.PostfixMaildir, func(m *Mail) bool {
			return To(r)(m) && HeaderIs("Message-ID", "<"+id+"@peertest.test>")(m)
		}, waitTimeout)
		checkDelivered(t, m, "", r, msg)
		if !strings.Contains(string(m.Raw), "Return-Path: <>\n") {
			t.Errorf("null sender not recorded as <>:\n%s", trunc(m.Raw))
		}
	}
}

func smtpCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func TestPostfixRecipientPolicy(t *testing.T) {
	e := Require(t)
	c := dialReceiver(t, e, "127.0.0.2", nil)
	if err := c.Mail("s@peertest.test"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rcpt     string
		code     int
		enhanced string
	}{
		{"reject@example.org", 550, "5.1.1"},
		{"reject-me@mx1down.test", 550, "5.1.1"},
		{"tempfail@example.org", 450, "4.2.0"},
		{"tempfail7@cnamemx.test", 450, "4.2.0"},
		{"user@not-ours.test", 554, "5.7.1"}, // relay access denied
		{"user@gws.test", 554, "5.7.1"},
		{"ok@mixed.test", 250, "2.1.5"},
	}
	for _, tt := range tests {
		err := c.Rcpt(tt.rcpt)
		code := smtpCode(err)
		if err == nil {
			code = 250
		}
		if code != tt.code || (err != nil && !strings.HasPrefix(err.(*textproto.Error).Msg, tt.enhanced)) {
			t.Errorf("RCPT TO:<%s> = %d %v, want %d %s", tt.rcpt, code, err, tt.code, tt.enhanced)
		}
	}
	c.Reset()
	c.Quit()
}

// The certificate verifies for the MX host names and addresses tests use.
func TestPostfixCertificate(t *testing.T) {
	e := Require(t)
	pool := e.CertPool(t)
	for _, tt := range []struct{ ip, name string }{
		{"127.0.0.1", "mx1.example.org"},
		{"127.0.0.2", "mx2.example.org"},
		{"127.0.0.1", "mail.mx-test.internal"},
		{"127.0.0.2", "live.mx1down.test"},
		{"127.0.0.1", "localhost"},
		{"127.0.0.2", "127.0.0.2"},
	} {
		c := dialReceiver(t, e, tt.ip, &tls.Config{RootCAs: pool, ServerName: tt.name})
		c.Quit()
	}
	// And not for other names.
	c, err := smtp.Dial(e.PostfixAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{RootCAs: pool, ServerName: "mx.other.test"}); err == nil {
		t.Error("certificate verified for mx.other.test")
	}
}

func TestSubmission(t *testing.T) {
	e := Require(t)
	pool := e.CertPool(t)
	host, _, _ := net.SplitHostPort(e.SubmissionAddr)
	tc := &tls.Config{RootCAs: pool, ServerName: host}

	dialSTARTTLS, dialTLS := submissionDialers(e.SubmissionAddr, e.SubmissionsAddr, tc, "")

	for _, tt := range []struct {
		name string
		dial func(*testing.T) *smtp.Client
		auth smtp.Auth
	}{
		{"submission/PLAIN", dialSTARTTLS, smtp.PlainAuth("", e.SmarthostUser, e.SmarthostPass, host)},
		{"submission/CRAM-MD5", dialSTARTTLS, smtp.CRAMMD5Auth(e.SmarthostUser, e.SmarthostPass)},
		{"submissions/PLAIN", dialTLS, smtp.PlainAuth("", e.SmarthostUser, e.SmarthostPass, host)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.dial(t)
			if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "CRAM-MD5") {
				t.Errorf("AUTH after TLS = %v %q", ok, mechs)
			}
			if err := c.Auth(tt.auth); err != nil {
				t.Fatalf("AUTH: %v", err)
			}
			const from = "app@peertest.test"
			// The relays anywhere, and sinks it all in one Maildir.
			rcpts := []string{"someone@gmail.com", "user@example.org"}
			id := uniqueID(t)
			msg := testMessage(from, rcpts[0], id)
			send(t, c, from, rcpts, msg)
			for _, r := range rcpts {
				m := e.WaitMaildir(t, e.SubmittedMaildir, func(m *Mail) bool {
					return To(r)(m) && HeaderIs("Message-ID", "<"+id+"@peertest.test>")(m)
				}, waitTimeout)
				checkDelivered(t, m, from, r, msg)
			}
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		c := dialSTARTTLS(t)
		err := c.Auth(smtp.PlainAuth("", e.SmarthostUser, "wrong", host))
		if smtpCode(err) != 535 {
			t.Fatalf("AUTH with a wrong password = %v, want 535", err)
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
}

// TestDNSZones resolves every test zone through the peers' DNS server, over
// UDP and TCP.
func TestDNSZones(t *testing.T) {
	e := Require(t)
	type q struct {
		name  string
		qtype uint16
		rcode int
		want  []string // answer RRs as "TYPE data", order-insensitive
	}
	tests := []q{
		{"example.org", dns.TypeMX, dns.RcodeSuccess, []string{"MX 10 mx1.example.org.", "MX 20 mx2.example.org."}},
		{"mx1.example.org", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.1"}},
		{"mx2.example.org", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.2"}},
		{"mx1.example.org", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"alias.example.org", dns.TypeA, dns.RcodeSuccess, []string{"CNAME mx1.example.org.", "A 127.0.0.1"}},
		{"nosuch.example.org", dns.TypeMX, dns.RcodeNameError, nil},
		{"mx-test.internal", dns.TypeMX, dns.RcodeSuccess, []string{"MX 10 mail.mx-test.internal."}},
		{"mail.mx-test.internal", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.1"}},
		{"mail.mx-test.internal", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"mx1down.test", dns.TypeMX, dns.RcodeSuccess, []string{"MX 10 dead.mx1down.test.", "MX 20 live.mx1down.test."}},
		{"dead.mx1down.test", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.9"}},
		{"live.mx1down.test", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.2"}},
		{"nullmx.test", dns.TypeMX, dns.RcodeSuccess, []string{"MX 0 ."}},
		{"cnamemx.test", dns.TypeMX, dns.RcodeSuccess, []string{"MX 5 alias.example.org."}},
		{"amx.test", dns.TypeMX, dns.RcodeSuccess, nil},
		{"amx.test", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.1"}},
		{"v6only.test", dns.TypeMX, dns.RcodeSuccess, []string{"MX 10 v6.test."}},
		{"v6.test", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA ::1"}},
		{"v6.test", dns.TypeA, dns.RcodeSuccess, nil},
		{"gws.test", dns.TypeMX, dns.RcodeSuccess, []string{"MX 1 aspmx.l.google.com.", "MX 5 alt1.aspmx.l.google.com."}},
		{"m365.test", dns.TypeMX, dns.RcodeSuccess, []string{"MX 0 m365-test.mail.protection.outlook.com."}},
		{"mixed.test", dns.TypeMX, dns.RcodeSuccess, []string{"MX 10 aspmx.l.google.com.", "MX 20 mail.mixed.test."}},
		{"mail.mixed.test", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.1"}},
		{"servfail.test", dns.TypeMX, dns.RcodeServerFailure, nil},
		{"mx.servfail.test", dns.TypeA, dns.RcodeServerFailure, nil},
		{"nosuch.test", dns.TypeMX, dns.RcodeNameError, nil},
		{"nxdomain.invalid", dns.TypeMX, dns.RcodeNameError, nil},
		// Never forwarded: the real world does not exist here.
		{"aspmx.l.google.com", dns.TypeA, dns.RcodeNameError, nil},
		{"gmail.com", dns.TypeMX, dns.RcodeNameError, nil},
	}
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
		for _, tt := range tests {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(tt.name), tt.qtype)
			r, _, err := c.Exchange(m, e.DNS)
			label := fmt.Sprintf("%s %s %s", proto, tt.name, dns.TypeToString[tt.qtype])
			if err != nil {
				t.Errorf("%s: %v", label, err)
				continue
			}
			if r.Rcode != tt.rcode {
				t.Errorf("%s: rcode %s, want %s", label, dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
			}
			var got []string
			for _, rr := range r.Answer {
				if rr.Header().Ttl != 60 {
					t.Errorf("%s: TTL %d, want 60: %v", label, rr.Header().Ttl, rr)
				}
				f := strings.Fields(rr.String()) // name ttl class type data...
				got = append(got, strings.Join(f[3:], " "))
			}
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s: answer %q, want %q", label, got, want)
			}
		}
	}

	t.Run("timeout.test", func(t *testing.T) {
		c := &dns.Client{Timeout: 300 * time.Millisecond}
		m := new(dns.Msg)
		m.SetQuestion("timeout.test.", dns.TypeMX)
		r, _, err := c.Exchange(m, e.DNS)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("MX timeout.test = %v, %v; want a timeout", r, err)
		}
	})
}

// submissionDialers return functions that open a net/smtp session to a
// submission peer: over STARTTLS (checking that AUTH is not offered before
// it) and over implicit TLS. helo, when set, is sent first.
func submissionDialers(starttlsAddr, implicitAddr string, tc *tls.Config, helo string) (dialSTARTTLS, dialTLS func(*testing.T) *smtp.Client) {
	dialSTARTTLS = func(t *testing.T) *smtp.Client {
		c, err := smtp.Dial(starttlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if helo != "" {
			if err := c.Hello(helo); err != nil {
				t.Fatal(err)
			}
		}
		if ok, _ := c.Extension("AUTH"); ok {
			t.Error("AUTH offered before STARTTLS")
		}
		if err := c.StartTLS(tc); err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
		return c
	}
	dialTLS = func(t *testing.T) *smtp.Client {
		conn, err := tls.Dial("tcp", implicitAddr, tc)
		if err != nil {
			t.Fatalf("implicit TLS: %v", err)
		}
		c, err := smtp.NewClient(conn, tc.ServerName)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return dialSTARTTLS, dialTLS
}
