package mailroute

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/mx"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
	"github.com/mailroute/go-mailroute/internal/smtptest"
)

func reply(code int, enh EnhancedCode, cmd, text string) error {
	return &Error{Code: code, Enhanced: enh, Command: cmd, Message: text, Permanent: code >= 500}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want Class
	}{
		{nil, ClassNone},
		{reply(550, EnhancedCode{5, 1, 1}, "RCPT", "The email account that you tried to reach does not exist."), ClassMailbox},
		{reply(552, EnhancedCode{5, 2, 2}, "RCPT", "The email account that you tried to reach is over quota."), ClassMailbox},
		{reply(452, EnhancedCode{4, 2, 2}, "RCPT", "mailbox full"), ClassMailbox},
		{reply(550, EnhancedCode{}, "RCPT", "user unknown"), ClassMailbox},
		{reply(552, EnhancedCode{5, 3, 4}, ".", "Message size exceeds fixed limit"), ClassMessage},
		{reply(550, EnhancedCode{5, 6, 0}, ".", "content rejected"), ClassMessage},
		{reply(550, EnhancedCode{5, 7, 1}, "RCPT", "Service unavailable, Client host [192.0.2.1] blocked using Spamhaus."), ClassPolicy},
		{reply(550, EnhancedCode{5, 7, 1}, ".", "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150)."), ClassPolicy},
		{reply(550, EnhancedCode{5, 7, 26}, ".", "Unauthenticated email from example.com is not accepted due to domain's DMARC policy."), ClassPolicy},
		{reply(550, EnhancedCode{5, 7, 25}, ".", "The IP address sending this message does not have a PTR record setup."), ClassPolicy},
		{reply(550, EnhancedCode{5, 7, 27}, ".", "The sender does not pass SPF."), ClassPolicy},
		{reply(421, EnhancedCode{4, 7, 0}, "MAIL", "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints"), ClassPolicy},
		{reply(421, EnhancedCode{4, 7, 28}, ".", "Our system has detected an unusual rate of unsolicited mail originating from your IP address."), ClassPolicy},
		{reply(550, EnhancedCode{5, 7, 1}, "RCPT", "Relaying denied"), ClassPolicy},
		{reply(554, EnhancedCode{}, "greeting", "mx.example.net ESMTP not accepting messages"), ClassPolicy},
		{reply(550, EnhancedCode{5, 1, 1}, "RCPT", "Sender address rejected: listed on blocklist"), ClassPolicy},
		{reply(450, EnhancedCode{4, 2, 0}, "RCPT", "Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html"), ClassGreylist},
		{reply(451, EnhancedCode{4, 7, 1}, "RCPT", "Greylisting in action, please come back later"), ClassGreylist},
		{reply(450, EnhancedCode{4, 2, 1}, "RCPT", "The user you are trying to contact is receiving mail too quickly."), ClassMailbox},
		{reply(451, EnhancedCode{4, 3, 0}, ".", "Temporary local problem"), ClassTemporary},
		{reply(451, EnhancedCode{}, ".", "local error in processing"), ClassTemporary},
		{reply(421, EnhancedCode{4, 3, 2}, "greeting", "Service not available"), ClassConnection},
		{reply(503, EnhancedCode{5, 5, 1}, "DATA", "No valid recipients"), ClassPermanent},
		{&Error{Command: "connect", Host: "mx.example", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, ClassConnection},
		{&Error{Command: "connect", Err: ErrTLSRequired}, ClassConnection},
		{fromClient(&smtpclient.Error{Command: "STARTTLS", Err: smtpclient.ErrTLSFailed}, nil), ClassConnection},
		{fromClient(&smtpclient.Error{Command: ".", Err: smtpclient.ErrConnectionLost}, nil), ClassTemporary},
		{fromClient(&smtpclient.Error{Command: "MAIL", Permanent: true, Err: smtpclient.ErrSizeExceeded}, nil), ClassMessage},
		{fromDNS(&mx.Error{Domain: "x", Kind: mx.ErrNullMX}), ClassDNS},
		{fromDNS(&mx.Error{Domain: "x", Kind: mx.ErrNoSuchDomain}), ClassDNS},
		{fromDNS(&mx.Error{Domain: "x", Kind: mx.ErrTemporary}), ClassDNS},
		{&Error{Code: 535, Enhanced: EnhancedCode{5, 7, 8}, Command: "AUTH", Err: ErrRelayAuth}, ClassConfig},
		{&Error{Err: ErrNoRelay}, ClassConfig},
		{fmt.Errorf("wrapped: %w", &Error{Err: ErrRelayTLS}), ClassConfig},
	}
	for _, tt := range tests {
		if got := Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestFallbackPolicy(t *testing.T) {
	conn := &Error{Command: "connect", Err: errors.New("refused")}
	grey := reply(450, EnhancedCode{4, 2, 0}, "RCPT", "Greylisted")
	block := reply(550, EnhancedCode{5, 7, 1}, "RCPT", "blocked using Spamhaus")
	nouser := reply(550, EnhancedCode{5, 1, 1}, "RCPT", "no such user")
	for _, tt := range []struct {
		p    FallbackPolicy
		err  error
		want bool
	}{
		{FallbackPolicy{}, conn, true},
		{FallbackPolicy{}, block, true},
		{FallbackPolicy{}, grey, false},
		{FallbackPolicy{OnGreylist: true}, grey, true},
		{FallbackPolicy{}, nouser, false},
		{FallbackPolicy{Never: true}, block, false},
		{FallbackPolicy{Decide: func(error) bool { return true }}, nouser, true},
		{FallbackPolicy{}, nil, false},
	} {
		if got := tt.p.ShouldFallback(tt.err); got != tt.want {
			t.Errorf("%+v.ShouldFallback(%v) = %v", tt.p, tt.err, got)
		}
	}
}

// fallbackWorld: MX hosts that misbehave in the ways the policy cares
// about, and a relay that accepts everything.
func TestFallbackEndToEnd(t *testing.T) {
	w := newDirectWorld(t)
	mx := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: mixedRcptPolicy("Service unavailable, client host blocked using Spamhaus")})
	w.dns.MX("dest.test", "mx.dest.test")
	w.dns.Host("dead.down.test", "127.0.0.9")
	w.dns.Host("dead2.down.test", "127.0.0.10")
	w.dns.MX("down.test", "dead.down.test", "dead2.down.test")
	relay := newRelay(t, smtptest.Options{})

	cfg := Config{Relay: relay.relay()}
	m := w.mailer(cfg)
	res, err := send(t, m, "a@sender.test", []string{"ok@dest.test", "blocked@dest.test", "nouser@dest.test", "grey@dest.test", "x@down.test"}, testBody)
	if err == nil {
		t.Fatal("no error though two recipients failed")
	}
	if r := wantStatus(t, res, "ok@dest.test", Delivered); r.Fallback || r.Via != Direct {
		t.Errorf("ok: %+v", r)
	}
	for _, rcpt := range []string{"blocked@dest.test", "x@down.test"} {
		r := wantStatus(t, res, rcpt, Delivered)
		if !r.Fallback || r.Via != Relayed || r.Err != nil || r.DirectErr == nil || r.Host != "127.0.0.1" {
			t.Errorf("%s: %+v, want delivered by fallback with the direct error kept", rcpt, r)
		}
	}
	if r := wantStatus(t, res, "blocked@dest.test", Delivered); Classify(r.DirectErr) != ClassPolicy {
		t.Errorf("blocked: direct error %v", r.DirectErr)
	}
	if r := wantStatus(t, res, "x@down.test", Delivered); Classify(r.DirectErr) != ClassConnection {
		t.Errorf("down: direct error %v", r.DirectErr)
	}
	if r := wantStatus(t, res, "nouser@dest.test", Failed); r.Fallback {
		t.Error("a 5.1.1 fell back")
	}
	if r := wantStatus(t, res, "grey@dest.test", Deferred); r.Fallback {
		t.Error("greylisting fell back by default")
	}
	var relayed []string
	for _, msg := range relay.s.Messages() {
		relayed = append(relayed, msg.Rcpts...)
	}
	if strings.Join(relayed, ",") != "blocked@dest.test,x@down.test" && strings.Join(relayed, ",") != "x@down.test,blocked@dest.test" {
		t.Errorf("the relay received %v", relayed)
	}
	if n := len(mx.Messages()); n != 1 {
		t.Errorf("the MX accepted %d messages, want 1", n)
	}

	// Opted in, greylisting falls back too.
	cfg.Fallback.OnGreylist = true
	res, _ = send(t, w.mailer(cfg), "a@sender.test", []string{"grey2@dest.test"}, testBody)
	if r := wantStatus(t, res, "grey2@dest.test", Delivered); !r.Fallback {
		t.Error("OnGreylist did not fall back")
	}
}

func TestFallbackFailsAtRelayToo(t *testing.T) {
	w := newDirectWorld(t)
	w.freePort()
	w.dns.Host("dead.down.test", "127.0.0.9")
	w.dns.MX("down.test", "dead.down.test")
	relay := newRelay(t, smtptest.Options{RcptPolicy: rejectPrefix})
	res, err := send(t, w.mailer(Config{Relay: relay.relay()}), "a@sender.test", []string{"reject@down.test"}, testBody)
	if err == nil {
		t.Fatal("no error")
	}
	r := wantStatus(t, res, "reject@down.test", Failed)
	var e *Error
	if !r.Fallback || !errors.As(r.Err, &e) || e.Code != 550 || e.Host != "127.0.0.1" {
		t.Errorf("%+v: want the relay's 550 first", r)
	}
	var op *net.OpError
	if !errors.As(r.Err, &op) {
		t.Errorf("the direct connection error is not reachable from Err: %v", r.Err)
	}
}

func TestNoSmarthostNoFallback(t *testing.T) {
	w := newDirectWorld(t)
	w.freePort()
	w.dns.Host("dead.down.test", "127.0.0.9")
	w.dns.MX("down.test", "dead.down.test")
	res, _ := send(t, w.mailer(Config{}), "a@sender.test", []string{"x@down.test"}, testBody)
	r := wantStatus(t, res, "x@down.test", Deferred)
	if r.Fallback || Classify(r.Err) != ClassConnection {
		t.Errorf("%+v", r)
	}
}

// mixedRcptPolicy refuses recipients by the start of their local part:
// blocked* with a 550 5.7.1 reputation refusal saying blocked, nouser*
// with 550 5.1.1, grey* with a postgrey-style 450 4.2.0; it accepts the
// rest.
func mixedRcptPolicy(blocked string) func(rcpt string) *smtp.SMTPError {
	return func(rcpt string) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(rcpt, "blocked"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: blocked}
		case strings.HasPrefix(rcpt, "nouser"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case strings.HasPrefix(rcpt, "grey"):
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Greylisted, see http://postgrey.example/"}
		}
		return nil
	}
}
