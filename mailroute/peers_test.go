package mailroute

// Tests against real peers: Postfix as MX and as relay, CoreDNS as the
// DNS server (internal/peers). They run when MAILROUTE_PEERS=1 and fail,
// rather than skip, when a peer is missing then.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mailroute/go-mailroute/internal/peertest"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

func peerMailer(t *testing.T, env peertest.Env, cfg Config) *Mailer {
	t.Helper()
	cfg.Hostname = "mail.sender.test"
	cfg.Resolver = DNSServer(env.DNS)
	cfg.Direct.Port = env.PostfixPort
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// uniqueBody is a message whose Message-ID lets a test find it in a Maildir.
func uniqueBody(t *testing.T) (string, string) {
	id := fmt.Sprintf("%s.%d@mailroute.test", strings.ReplaceAll(t.Name(), "/", "."), time.Now().UnixNano())
	body := "From: a@sender.test\r\nTo: b@example.org\r\nSubject: " + t.Name() +
		"\r\nMessage-ID: <" + id + ">\r\n\r\nHello Postfix.\r\n..a line that starts with a dot\r\n"
	return body, "<" + id + ">"
}

func TestPeersDirectToPostfix(t *testing.T) {
	env := peertest.Require(t)
	m := peerMailer(t, env, Config{Router: Rules{{Domains: []string{"*"}, Via: Direct}}})
	body, id := uniqueBody(t)
	res, err := send(t, m, "a@sender.test", []string{"ok@example.org", "reject1@example.org", "tempfail1@example.org"}, body)
	if err == nil {
		t.Fatal("no error for the rejected recipients")
	}
	ok := wantStatus(t, res, "ok@example.org", Delivered)
	if ok.Host != "mx1.example.org" && ok.Host != "mx2.example.org" {
		t.Errorf("delivered by %q", ok.Host)
	}
	var e *Error
	rej := wantStatus(t, res, "reject1@example.org", Failed)
	if !errors.As(rej.Err, &e) || e.Code != 550 || e.Enhanced != (EnhancedCode{5, 1, 1}) || e.Command != "RCPT" {
		t.Errorf("reject1: %v", rej.Err)
	}
	tmp := wantStatus(t, res, "tempfail1@example.org", Deferred)
	if !errors.As(tmp.Err, &e) || e.Code != 450 || e.Enhanced != (EnhancedCode{4, 2, 0}) {
		t.Errorf("tempfail1: %v", tmp.Err)
	}

	mail := env.WaitMaildir(t, env.PostfixMaildir, peertest.HeaderIs("Message-ID", id), 10*time.Second)
	if mail.ReturnPath != "a@sender.test" || !strings.EqualFold(mail.OriginalTo, "ok@example.org") {
		t.Errorf("envelope: Return-Path %q X-Original-To %q", mail.ReturnPath, mail.OriginalTo)
	}
	if !bytes.Equal(mail.Sent(), []byte(body)) {
		t.Errorf("arrived as\n%q\nwant\n%q", mail.Sent(), body)
	}
	if !bytes.Contains(mail.Raw, []byte("with ESMTPS")) {
		t.Errorf("STARTTLS was not used:\n%s", mail.Raw[:min(len(mail.Raw), 600)])
	}
}

func TestPeersDirectRequireTLSVerified(t *testing.T) {
	env := peertest.Require(t)
	m := peerMailer(t, env, Config{
		Router: Rules{{Domains: []string{"*"}, Via: Direct}},
		Direct: DirectOptions{TLS: RequireTLS, TLSConfig: &tls.Config{RootCAs: env.CertPool(t)}},
	})
	body, id := uniqueBody(t)
	if _, err := send(t, m, "a@sender.test", []string{"secure@example.org"}, body); err != nil {
		t.Fatal(err)
	}
	env.WaitMaildir(t, env.PostfixMaildir, peertest.HeaderIs("Message-ID", id), 10*time.Second)

	// Without the peer's certificate in the roots, RequireTLS refuses
	// every host and sends nothing.
	strict := peerMailer(t, env, Config{
		Router: Rules{{Domains: []string{"*"}, Via: Direct}},
		Direct: DirectOptions{TLS: RequireTLS},
	})
	res, err := send(t, strict, "a@sender.test", []string{"secure@example.org"}, body)
	if !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("err %v, want ErrTLSRequired", err)
	}
	wantStatus(t, res, "secure@example.org", Deferred)
}

func TestPeersDirectMXWalkAndDNS(t *testing.T) {
	env := peertest.Require(t)
	m := peerMailer(t, env, Config{Router: Rules{{Domains: []string{"*"}, Via: Direct}}})
	body, id := uniqueBody(t)
	res, err := send(t, m, "a@sender.test", []string{
		"walk@mx1down.test", // MX1 at 127.0.0.9: nothing listens → MX2
		"c@cnamemx.test",    // the MX target is a CNAME
		"i@amx.test",        // no MX: the implicit MX
		"n@nullmx.test", "x@nosuchdomain.test", "s@servfail.test",
	}, body)
	if err == nil {
		t.Fatal("no error for the DNS failures")
	}
	if r := wantStatus(t, res, "walk@mx1down.test", Delivered); r.Host != "live.mx1down.test" {
		t.Errorf("walk: host %q, want live.mx1down.test", r.Host)
	}
	wantStatus(t, res, "c@cnamemx.test", Delivered)
	if r := wantStatus(t, res, "i@amx.test", Delivered); r.Host != "amx.test" {
		t.Errorf("implicit MX: host %q", r.Host)
	}
	for rcpt, kind := range map[string]error{"n@nullmx.test": ErrNullMX, "x@nosuchdomain.test": ErrNoSuchDomain, "s@servfail.test": ErrDNSTemporary} {
		r := res.Recipients[indexOf(res, rcpt)]
		if !errors.Is(r.Err, kind) {
			t.Errorf("%s: %v, want %v", rcpt, r.Err, kind)
		}
		if r.Host != "" {
			t.Errorf("%s: a server (%s) was contacted", rcpt, r.Host)
		}
	}
	if r := wantStatus(t, res, "n@nullmx.test", Failed); Classify(r.Err) != ClassDNS {
		t.Errorf("null MX class %v", Classify(r.Err))
	}
	wantStatus(t, res, "s@servfail.test", Deferred)
	for _, rcpt := range []string{"walk@mx1down.test", "c@cnamemx.test", "i@amx.test"} {
		mail := env.WaitMaildir(t, env.PostfixMaildir, func(m *peertest.Mail) bool {
			return strings.EqualFold(m.OriginalTo, rcpt) && m.Header("Message-ID") == id
		}, 10*time.Second)
		if !bytes.Equal(mail.Sent(), []byte(body)) {
			t.Errorf("%s: body changed in transit", rcpt)
		}
	}
}

func indexOf(res *Result, rcpt string) int {
	for i, r := range res.Recipients {
		if r.Rcpt == rcpt {
			return i
		}
	}
	panic("no result for " + rcpt)
}

func TestPeersRouting(t *testing.T) {
	env := peertest.Require(t)
	m := peerMailer(t, env, Config{})
	for domain, want := range map[string]Via{"gws.test": Relayed, "m365.test": Relayed, "mixed.test": Direct, "example.org": Direct} {
		r, err := m.Route(context.Background(), "someone@"+domain)
		if err != nil || r.Via != want {
			t.Errorf("%s: %+v, %v; want %v", domain, r, err, want)
		}
	}
	if _, err := m.Route(context.Background(), "x@timeout.test"); !errors.Is(err, ErrDNSTemporary) {
		t.Errorf("timeout.test: %v, want ErrDNSTemporary", err)
	}
}

func TestPeersSmarthostPostfix(t *testing.T) {
	env := peertest.Require(t)
	roots := &tls.Config{RootCAs: env.CertPool(t)}
	cases := []struct {
		name  string
		relay Relay
	}{
		{"STARTTLS best mechanism", Relay{Addr: env.SubmissionAddr, Username: env.SmarthostUser, Password: env.SmarthostPass}},
		{"STARTTLS LOGIN", Relay{Addr: env.SubmissionAddr, Auth: sasl.NewLoginClient(env.SmarthostUser, env.SmarthostPass)}},
		{"STARTTLS CRAM-MD5", Relay{Addr: env.SubmissionAddr, Auth: smtpclient.NewCramMD5Client(env.SmarthostUser, env.SmarthostPass)}},
		{"implicit TLS", Relay{Addr: env.SubmissionsAddr, ImplicitTLS: true, Username: env.SmarthostUser, Password: env.SmarthostPass}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay := tc.relay
			relay.TLSConfig = roots
			m := peerMailer(t, env, Config{Relay: &relay})
			body, id := uniqueBody(t)
			res, err := send(t, m, "a@sender.test", []string{"friend@gmail.com", "boss@gws.test"}, body)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res.Recipients {
				if r.Via != Relayed || r.Host != "127.0.0.1" {
					t.Errorf("%s: %+v", r.Rcpt, r)
				}
			}
			for _, rcpt := range []string{"friend@gmail.com", "boss@gws.test"} {
				mail := env.WaitMaildir(t, env.SubmittedMaildir, func(m *peertest.Mail) bool {
					return strings.EqualFold(m.OriginalTo, rcpt) && m.Header("Message-ID") == id
				}, 10*time.Second)
				if mail.ReturnPath != "a@sender.test" || !bytes.Equal(mail.Sent(), []byte(body)) {
					t.Errorf("%s: Return-Path %q, body intact %v", rcpt, mail.ReturnPath, bytes.Equal(mail.Sent(), []byte(body)))
				}
				if !bytes.Contains(mail.Raw, []byte("ESMTPSA")) {
					t.Errorf("%s: not received over TLS with AUTH", rcpt)
				}
			}
		})
	}
}

func TestPeersSmarthostWrongPassword(t *testing.T) {
	env := peertest.Require(t)
	m := peerMailer(t, env, Config{Relay: &Relay{
		Addr: env.SubmissionAddr, Username: env.SmarthostUser, Password: "wrong",
		TLSConfig: &tls.Config{RootCAs: env.CertPool(t)},
	}})
	res, err := send(t, m, "a@sender.test", []string{"friend@gmail.com"}, testBody)
	if !errors.Is(err, ErrRelayAuth) {
		t.Fatalf("err %v, want ErrRelayAuth", err)
	}
	r := wantStatus(t, res, "friend@gmail.com", Deferred)
	var e *Error
	if !errors.As(r.Err, &e) || e.Code != 535 {
		t.Errorf("err %v, want Postfix's 535", r.Err)
	}
}

// Postfix's certificate is self-signed: with the system roots the relay
// must fail before AUTH.
func TestPeersSmarthostUnverifiedCertificate(t *testing.T) {
	env := peertest.Require(t)
	m := peerMailer(t, env, Config{Relay: &Relay{Addr: env.SubmissionAddr, Username: env.SmarthostUser, Password: env.SmarthostPass}})
	_, err := send(t, m, "a@sender.test", []string{"friend@gmail.com"}, testBody)
	if !errors.Is(err, ErrRelayTLS) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err %v, want ErrRelayTLS naming the certificate", err)
	}
}
