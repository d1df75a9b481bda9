package mailroute

import (
	"context"
	"errors"
	"net/smtp"
	"slices"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// A SendMail that delivers to some recipients and not to others returns a
// *SendError saying which, so that a caller retrying on error can skip
// those already delivered (net/smtp would have them sent twice).
func TestSendMailPartialDeliverySendError(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	w.dns.MX("later.test", "mx.later.test")
	w.directWorld.mx("mx.later.test", "127.0.0.2", smtptest.Options{RcptPolicy: func(string) *gosmtp.SMTPError {
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	}})
	m := w.mailer()
	auth := smtp.PlainAuth("", relayUser, relayPass, "relay.test")
	w.dns.MX("strict.test", "mx.strict.test")
	strict := w.directWorld.mx("mx.strict.test", "127.0.0.3", smtptest.Options{RcptPolicy: rejectPrefix})
	to := []string{"friend@gmail.com", "pal@small.test", "nobody@later.test", "reject-me@strict.test"}

	err := m.SendMail(relayAddr, auth, "a@sender.test", to, []byte(dropinBody))
	var se *SendError
	if !errors.As(err, &se) {
		t.Fatalf("err %T %v, want a *SendError", err, err)
	}
	if !slices.Equal(se.Delivered, []string{"friend@gmail.com", "pal@small.test"}) ||
		!slices.Equal(se.Deferred, []string{"nobody@later.test"}) ||
		!slices.Equal(se.Failed, []string{"reject-me@strict.test"}) || len(se.Queued) != 0 {
		t.Errorf("SendError delivered %q deferred %q failed %q queued %q", se.Delivered, se.Deferred, se.Failed, se.Queued)
	}
	// What arrived agrees with what the error says.
	if n := len(w.relay.Messages()); n != 1 {
		t.Errorf("relay got %d messages", n)
	}
	if got := w.mx.Messages(); len(got) != 1 || !slices.Equal(got[0].Rcpts, []string{"pal@small.test"}) {
		t.Errorf("small.test's MX got %v", got)
	}
	if got := strict.Messages(); len(got) != 0 {
		t.Errorf("strict.test's MX accepted %v", got)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != 451 {
		t.Errorf("errors.As gives %v, want the first undelivered recipient's 451", e)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "mailroute: 2 of 4 recipients not delivered (delivered to friend@gmail.com, pal@small.test)") ||
		!strings.Contains(msg, "\n<nobody@later.test>: mx.later.test: RCPT: 451 4.3.0 try later") ||
		!strings.Contains(msg, "\n<reject-me@strict.test>: mx.strict.test: RCPT: 550 5.1.1") {
		t.Errorf("error text:\n%s", msg)
	}
}

// Public error texts name no internal package and say "mailroute: " at
// most once, whatever failed.
func TestErrorTextsNoInternalNamesNoStutter(t *testing.T) {
	failing := Rules{{Domains: []string{"*"}, Providers: nil, Via: Direct}}
	tests := []struct {
		name string
		run  func(t *testing.T) error
	}{
		{"relay refuses the password", func(t *testing.T) error {
			w := newRelay(t, smtptest.Options{})
			r := w.relay()
			r.Password = "wrong"
			_, err := send(t, w.mailer(r), "a@sender.test", []string{"b@dest.test"}, testBody)
			return err
		}},
		{"relay without TLS", func(t *testing.T) error {
			s := smtptest.Start(t, smtptest.Options{Auth: map[string]string{"u": "p"}, AllowInsecureAuth: true})
			w := &relayWorld{t: t, s: s}
			_, err := send(t, w.mailer(&Relay{Addr: s.Addr, Username: "u", Password: "p"}), "a@sender.test", []string{"b@dest.test"}, testBody)
			return err
		}},
		{"no MX: routing needs DNS", func(t *testing.T) error {
			w := newDirectWorld(t)
			m := w.mailer(Config{Router: Rules{{Providers: BigProviders, Via: Relayed}, {Domains: []string{"*"}, Via: Direct}}})
			w.dns.ServFail("dest.test")
			_, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
			return err
		}},
		{"no route", func(t *testing.T) error {
			w := newDirectWorld(t)
			m := w.mailer(Config{Router: Rules{{Domains: []string{"other.test"}, Via: Direct}}})
			_, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
			return err
		}},
		{"no relay", func(t *testing.T) error {
			w := newDirectWorld(t)
			m := w.mailer(Config{Router: allSmarthost})
			_, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
			return err
		}},
		{"malformed recipient", func(t *testing.T) error {
			w := newDirectWorld(t)
			_, err := send(t, w.mailer(Config{Router: failing}), "a@sender.test", []string{"b@", "c@dest.test"}, testBody)
			return err
		}},
		{"NUL in the message", func(t *testing.T) error {
			w := newDirectWorld(t)
			_, err := send(t, w.mailer(Config{Router: failing}), "a@sender.test", []string{"c@dest.test"}, "a\x00b\r\n")
			return err
		}},
		{"closed Mailer", func(t *testing.T) error {
			w := newDirectWorld(t)
			m := w.mailer(Config{Router: failing})
			m.Close()
			_, err := m.Send(context.Background(), "a@sender.test", []string{"c@dest.test"}, strings.NewReader(testBody))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(t)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, internal := range []string{"smtpclient", "message:", "mx:", "dnsname", "internal/"} {
				if strings.Contains(msg, internal) {
					t.Errorf("names %q: %s", internal, msg)
				}
			}
			if n := strings.Count(msg, "mailroute: "); n != 1 {
				t.Errorf("says mailroute %d times: %s", n, msg)
			}
		})
	}
}
