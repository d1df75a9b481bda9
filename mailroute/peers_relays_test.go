package mailroute

// Several relays and SendError against real peers: Postfix (MX and
// submission) and maddy (submission). They run when MAILROUTE_PEERS=1.

import (
	"crypto/tls"
	"errors"
	"net/smtp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/peertest"
)

// A SendMail that Postfix partly refuses says who got the message, and
// the one it calls delivered is in Postfix's Maildir.
func TestPeersSendErrorPostfix(t *testing.T) {
	env := peertest.Require(t)
	m := peerMailer(t, env, Config{Router: Rules{{Domains: []string{"*"}, Via: Direct}}})
	body, id := uniqueBody(t)
	err := m.SendMail("unused:25", (smtp.Auth)(nil), "a@sender.test",
		[]string{"adoption-ok@example.org", "reject-adoption@example.org", "tempfail-adoption@example.org"}, []byte(body))
	var se *SendError
	if !errors.As(err, &se) {
		t.Fatalf("err %T %v, want a *SendError", err, err)
	}
	if !slices.Equal(se.Delivered, []string{"adoption-ok@example.org"}) || !slices.Equal(se.Failed, []string{"reject-adoption@example.org"}) ||
		!slices.Equal(se.Deferred, []string{"tempfail-adoption@example.org"}) {
		t.Errorf("SendError %+v", se)
	}
	env.WaitMaildir(t, env.PostfixMaildir, func(m *peertest.Mail) bool {
		return m.Header("Message-ID") == id && strings.EqualFold(m.OriginalTo, "adoption-ok@example.org")
	}, 10*time.Second)
}

// The default relay (maddy, with a wrong password) fails over to Postfix's
// submission service, which delivers; mail from a sender domain with its
// own relay goes to maddy with the right password.
func TestPeersRelayFailoverAndPerSender(t *testing.T) {
	env := peertest.Require(t)
	maddyRoots := &tls.Config{RootCAs: env.MaddyCertPool(t)}
	postfix := &Relay{Addr: env.SubmissionAddr, Username: env.SmarthostUser, Password: env.SmarthostPass,
		TLSConfig: &tls.Config{RootCAs: env.CertPool(t)}}
	m := peerMailer(t, env, Config{
		Router:       Rules{{Domains: []string{"*"}, Via: Relayed}},
		Relay:        &Relay{Addr: env.MaddySubmissionAddr, Username: env.MaddyUser, Password: "wrong", TLSConfig: maddyRoots, Failover: "postfix"},
		Relays:       map[string]*Relay{"postfix": postfix, "maddy": {Addr: env.MaddySubmissionAddr, Username: env.MaddyUser, Password: env.MaddyPass, TLSConfig: maddyRoots}},
		SenderRelays: map[string]string{"brand.test": "maddy"},
	})

	body, id := uniqueBody(t)
	res, err := send(t, m, "a@sender.test", []string{"adoption-failover@gmail.com"}, body)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, res, "adoption-failover@gmail.com", Delivered)
	mail := env.WaitMaildir(t, env.SubmittedMaildir, func(m *peertest.Mail) bool {
		return m.Header("Message-ID") == id
	}, 10*time.Second)
	if mail.ReturnPath != "a@sender.test" {
		t.Errorf("Return-Path %q", mail.ReturnPath)
	}

	body, id = uniqueBody(t)
	if _, err := send(t, m, "news@brand.test", []string{"adoption-brand@gmail.com"}, body); err != nil {
		t.Fatal(err)
	}
	got := env.WaitMaddy(t, env.MaddyStore, func(m *peertest.MaddyMail) bool {
		return m.Header("Message-ID") == id
	}, 10*time.Second)
	if !got.HasRcpt("adoption-brand@gmail.com") {
		t.Errorf("maddy got it for the wrong recipient")
	}
}
