package mailroute

// The relay against a real maddy (internal/peers/maddy.sh): a second,
// independent submission implementation beside Postfix's. These tests run
// when MAILROUTE_PEERS=1 and fail, rather than skip, when maddy is missing.

import (
	"bytes"
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mailroute/go-mailroute/internal/peertest"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

func TestPeersSmarthostMaddy(t *testing.T) {
	env := peertest.Require(t)
	roots := &tls.Config{RootCAs: env.MaddyCertPool(t)}
	cases := []struct {
		name  string
		relay Relay
	}{
		{"STARTTLS", Relay{Addr: env.MaddySubmissionAddr, Username: env.MaddyUser, Password: env.MaddyPass}},
		{"implicit TLS", Relay{Addr: env.MaddySubmissionsAddr, ImplicitTLS: true, Username: env.MaddyUser, Password: env.MaddyPass}},
		// maddy advertises only PLAIN, but takes LOGIN when a client sends it.
		{"STARTTLS LOGIN", Relay{Addr: env.MaddySubmissionAddr, Auth: sasl.NewLoginClient(env.MaddyUser, env.MaddyPass)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay := tc.relay
			relay.TLSConfig = roots
			// The default router: gmail.com by name, gws.test by its
			// Google MX (through CoreDNS), both to the relay.
			m := peerMailer(t, env, Config{Relay: &relay})
			body, id := uniqueBody(t)
			rcpts := []string{"friend@gmail.com", "boss@gws.test"}
			res, err := send(t, m, "a@sender.test", rcpts, body)
			if err != nil {
				t.Fatal(err)
			}
			for _, rcpt := range rcpts {
				if r := wantStatus(t, res, rcpt, Delivered); r.Via != Relayed || r.Host != "127.0.0.1" {
					t.Errorf("%s: %+v", rcpt, r)
				}
			}

			// Send makes one job per recipient domain, so one transaction,
			// and one file in maddy's store, per domain.
			maddyCopies(t, env, id, 2)
			for _, rcpt := range rcpts {
				mail := env.WaitMaddy(t, env.MaddyStore, func(m *peertest.MaddyMail) bool {
					return m.HasRcpt(rcpt) && m.Header("Message-ID") == id
				}, 10*time.Second)
				checkMaddyMail(t, mail, "a@sender.test", []string{rcpt}, body)
			}
		})
	}

	// Two recipients in one domain: one transaction, one file, both in
	// the envelope.
	t.Run("one domain", func(t *testing.T) {
		relay := cases[0].relay
		relay.TLSConfig = roots
		m := peerMailer(t, env, Config{Relay: &relay})
		body, id := uniqueBody(t)
		rcpts := []string{"friend@gmail.com", "Other.Friend@gmail.com"}
		if _, err := send(t, m, "a@sender.test", rcpts, body); err != nil {
			t.Fatal(err)
		}
		checkMaddyMail(t, maddyCopies(t, env, id, 1)[0], "a@sender.test", rcpts, body)
	})
}

// checkMaddyMail checks a message in maddy's store against what was sent.
func checkMaddyMail(t *testing.T, mail *peertest.MaddyMail, from string, rcpts []string, body string) {
	t.Helper()
	if mail.From != from || !slices.Equal(mail.To, rcpts) {
		t.Errorf("envelope: from <%s> to %q, want <%s> to %q", mail.From, mail.To, from, rcpts)
	}
	if !bytes.Equal(mail.Sent(), []byte(body)) {
		t.Errorf("arrived as\n%q\nwant\n%q", mail.Sent(), body)
	}
	// uniqueBody has no Date: maddy's submission adds one (and nothing
	// else); Sent leaves it out.
	if !slices.Equal(mail.Added, []string{"Date"}) {
		t.Errorf("maddy added %q, want [Date]", mail.Added)
	}
	if !strings.Contains(mail.Received, "(envelope-sender <"+from+">) with ESMTPS id ") {
		t.Errorf("not received over TLS: Received: %s", mail.Received)
	}
}

// maddyCopies waits for the message with Message-ID id in maddy's store
// and returns its copies, failing the test unless there are exactly n.
func maddyCopies(t *testing.T, env peertest.Env, id string, n int) []*peertest.MaddyMail {
	t.Helper()
	env.WaitMaddy(t, env.MaddyStore, peertest.MaddyHeaderIs("Message-ID", id), 10*time.Second)
	// Every transaction ended before Send returned: all copies are there.
	all, err := peertest.ReadMaddyStore(env.MaddyStore)
	if err != nil {
		t.Fatal(err)
	}
	var copies []*peertest.MaddyMail
	for _, m := range all {
		if m.Header("Message-ID") == id {
			copies = append(copies, m)
		}
	}
	if len(copies) != n {
		t.Fatalf("%d copies of %s in maddy's store, want %d", len(copies), id, n)
	}
	return copies
}

// maddy answers a wrong password with 454 4.7.0, a temporary failure, where
// Postfix says 535. smarthostError keeps a 4xx to AUTH as the server's
// transient failure: Deferred, Code 454, not permanent, and not
// ErrRelayAuth (that sentinel is for the 5xx refusals and the local
// auth problems, the user's configuration to fix).
func TestPeersSmarthostMaddyWrongPassword(t *testing.T) {
	env := peertest.Require(t)
	for _, tc := range []struct {
		name  string
		relay Relay
	}{
		{"STARTTLS", Relay{Addr: env.MaddySubmissionAddr}},
		{"implicit TLS", Relay{Addr: env.MaddySubmissionsAddr, ImplicitTLS: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			relay := tc.relay
			relay.Username, relay.Password = env.MaddyUser, "wrong"
			relay.TLSConfig = &tls.Config{RootCAs: env.MaddyCertPool(t)}
			m := peerMailer(t, env, Config{Relay: &relay})
			body, id := uniqueBody(t)
			res, err := send(t, m, "a@sender.test", []string{"friend@gmail.com"}, body)
			if err == nil {
				t.Fatal("no error with a wrong password")
			}
			r := wantStatus(t, res, "friend@gmail.com", Deferred)
			var e *Error
			if !errors.As(err, &e) || !errors.As(r.Err, &e) {
				t.Fatalf("err %v (recipient: %v), want an *Error", err, r.Err)
			}
			if e.Code != 454 || e.Enhanced != (EnhancedCode{4, 7, 0}) || e.Command != "AUTH" || e.Host != "127.0.0.1" {
				t.Errorf("err %+v, want maddy's 454 4.7.0 to AUTH from 127.0.0.1", e)
			}
			if e.Permanent || !e.Temporary() || IsPermanent(err) {
				t.Errorf("err %v is permanent", err)
			}
			if errors.Is(err, ErrRelayAuth) || errors.Is(r.Err, ErrRelayAuth) {
				t.Errorf("err %v is ErrRelayAuth; a 4xx to AUTH is the server's transient failure", err)
			}
			if !errors.Is(r.Err, smtpclient.ErrAuthFailed) {
				t.Errorf("err %v does not wrap the engine's ErrAuthFailed", r.Err)
			}
			// Nothing was stored.
			all, err := peertest.ReadMaddyStore(env.MaddyStore)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range all {
				if m.Header("Message-ID") == id {
					t.Errorf("stored despite the failed AUTH: %s", m.Path)
				}
			}
		})
	}
}

// A relay configured without credentials: maddy answers MAIL with "502
// 5.7.0 Please authenticate first". A configuration problem: the mail is
// kept, not bounced.
func TestPeersSmarthostMaddyNoCredentials(t *testing.T) {
	env := peertest.Require(t)
	m := peerMailer(t, env, Config{Relay: &Relay{Addr: env.MaddySubmissionAddr, TLSConfig: &tls.Config{RootCAs: env.MaddyCertPool(t)}}})
	res, err := send(t, m, "a@sender.test", []string{"friend@gmail.com"}, testBody)
	if !errors.Is(err, ErrRelayAuth) {
		t.Fatalf("err %v, want ErrRelayAuth", err)
	}
	wantStatus(t, res, "friend@gmail.com", Deferred)
}
