package mailroute

// Authenticated TLS against real peers: Unbound validating zones signed at
// peer start (internal/peers/dnssec.sh) with TLSA records made from the
// Postfix peer's certificate, Postfix as the MX and the relay, and an
// MTA-STS policy host served here with a throwaway CA.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailroute/go-mailroute/internal/peertest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

// dnssecMailer is a Mailer whose resolver is the peers' validating Unbound,
// which answers for the DNSSEC view of the test domains.
func dnssecMailer(t *testing.T, env peertest.Env, cfg Config) *Mailer {
	t.Helper()
	resolver := env.RequireDNSSEC(t)
	cfg.Hostname = "mail.sender.test"
	cfg.Resolver = DNSServer(resolver)
	cfg.Direct.Port = env.PostfixPort
	cfg.Direct.DANEResolver = resolver
	if cfg.Router == nil {
		cfg.Router = Rules{{Domains: []string{"*"}, Via: Direct}}
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// stripSTARTTLS is an attacker on the path to the Postfix peer: it listens
// on addr and relays to Postfix, deleting STARTTLS from the EHLO reply. It
// records the client's commands.
type stripSTARTTLS struct {
	mu       sync.Mutex
	commands []string
}

func startStripper(t *testing.T, listen, upstream string) *stripSTARTTLS {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("the STARTTLS stripper cannot listen on %s: %v", listen, err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &stripSTARTTLS{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.relay(c, upstream)
		}
	}()
	return s
}

func (s *stripSTARTTLS) relay(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	go func() {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				s.mu.Lock()
				s.commands = append(s.commands, strings.TrimSpace(line))
				s.mu.Unlock()
				u.Write([]byte(line))
			}
			if err != nil {
				u.Close()
				return
			}
		}
	}()
	br := bufio.NewReader(u)
	for {
		line, err := br.ReadString('\n')
		if strings.Contains(strings.ToUpper(line), "STARTTLS") {
			line = strings.Replace(line, "STARTTLS", "XSTRIPPED", 1) // keep the reply's shape
		}
		if line != "" {
			c.Write([]byte(line))
		}
		if err != nil {
			return
		}
	}
}

func (s *stripSTARTTLS) sawMail() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.commands {
		if strings.HasPrefix(strings.ToUpper(c), "MAIL") {
			return true
		}
	}
	return false
}

// TestPeersDANE: delivery to the Postfix peer under DANE, through a real
// validating resolver.
func TestPeersDANE(t *testing.T) {
	env := peertest.Require(t)
	stripper := startStripper(t, net.JoinHostPort("127.0.0.33", strconv.Itoa(env.PostfixPort)), env.PostfixAddr("127.0.0.1"))
	m := dnssecMailer(t, env, Config{})
	for _, tt := range []struct {
		name   string
		rcpt   string
		status Status
		tls    TLSProtection
		err    error
	}{
		{"TLSA matches Postfix", "tls-dane-match@example.org", Delivered, TLSDANE, nil},
		{"TLSA matches nothing", "tls-dane-mismatch@mx-test.internal", Deferred, TLSNone, ErrTLSPolicy},
		{"STARTTLS stripped on the path", "tls-dane-stripped@mixed.test", Deferred, TLSNone, ErrTLSPolicy},
		{"unsigned TLSA ignored", "tls-dane-unsigned@amx.test", Delivered, TLSUnverified, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body, id := uniqueBody(t)
			res, _ := send(t, m, "a@sender.test", []string{tt.rcpt}, body)
			r := wantStatus(t, res, tt.rcpt, tt.status)
			if r.TLS != tt.tls {
				t.Errorf("TLS %v, want %v", r.TLS, tt.tls)
			}
			if tt.err != nil && !errors.Is(r.Err, tt.err) {
				t.Errorf("err %v, want %v", r.Err, tt.err)
			}
			if tt.status == Delivered {
				mail := env.WaitMaildir(t, env.PostfixMaildir, peertest.HeaderIs("Message-ID", id), 10*time.Second)
				if !strings.EqualFold(mail.OriginalTo, tt.rcpt) {
					t.Errorf("arrived for %q", mail.OriginalTo)
				}
				return
			}
			if mails, _ := peertest.ReadMaildir(env.PostfixMaildir); len(mails) > 0 {
				for _, ml := range mails {
					if ml.Header("Message-ID") == id {
						t.Errorf("a deferred message arrived")
					}
				}
			}
		})
	}
	if stripper.sawMail() {
		t.Error("MAIL was sent through the STARTTLS stripper")
	}
}

// TestPeersMTASTS: MTA-STS enforce against the Postfix peer, with the
// policy fetched over HTTPS from a host found through the resolver, and
// the TLS-RPT report of what happened.
func TestPeersMTASTS(t *testing.T) {
	env := peertest.Require(t)
	ca := testpki.New(t)
	policies := map[string]string{
		"mx1down.test": "version: STSv1\nmode: enforce\nmx: live.mx1down.test\nmax_age: 600\n",
		"cnamemx.test": "version: STSv1\nmode: enforce\nmx: live.mx1down.test\nmax_age: 600\n",
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := policies[strings.TrimPrefix(strings.Split(r.Host, ":")[0], "mta-sts.")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, p)
	}))
	srv.TLS = ca.ServerConfig("mta-sts.mx1down.test", "mta-sts.cnamemx.test")
	srv.StartTLS()
	defer srv.Close()

	roots := env.CertPool(t) // Postfix's self-signed certificate covers live.mx1down.test
	roots.AddCert(ca.Cert)
	m := dnssecMailer(t, env, Config{Direct: DirectOptions{TLSConfig: &tls.Config{RootCAs: roots}}})
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	m.testPolicyPort = port

	body, id := uniqueBody(t)
	res, _ := send(t, m, "a@sender.test", []string{"tls-sts-ok@mx1down.test", "tls-sts-outside@cnamemx.test"}, body)
	ok := wantStatus(t, res, "tls-sts-ok@mx1down.test", Delivered)
	if ok.TLS != TLSMTASTS || ok.Host != "live.mx1down.test" {
		t.Errorf("delivered with %v by %s", ok.TLS, ok.Host)
	}
	out := wantStatus(t, res, "tls-sts-outside@cnamemx.test", Deferred)
	if !errors.Is(out.Err, ErrTLSPolicy) || out.TLS != TLSNone {
		t.Errorf("outside the policy: %v, %v", out.Err, out.TLS)
	}
	mail := env.WaitMaildir(t, env.PostfixMaildir, peertest.HeaderIs("Message-ID", id), 10*time.Second)
	if !strings.EqualFold(mail.OriginalTo, "tls-sts-ok@mx1down.test") {
		t.Errorf("arrived for %q, want only the recipient inside the policy", mail.OriginalTo)
	}

	for _, domain := range []string{"mx1down.test", "cnamemx.test"} {
		r := m.TLSReport(domain, TLSReportOptions{Organization: "mailroute tests", Contact: "tls@sender.test", Day: time.Now()})
		if r == nil {
			t.Fatalf("%s: no TLS report", domain)
		}
		raw, _ := json.Marshal(r)
		if err := validateTLSRPT(raw); err != nil {
			t.Errorf("%s: %v\n%s", domain, err, raw)
		}
		s := r.Policies[0].Summary
		if (domain == "mx1down.test") != (s.Successful == 1 && s.Failed == 0) {
			t.Errorf("%s: %s", domain, raw)
		}
	}
}

// TestPeersREQUIRETLS: the Postfix peer does not offer REQUIRETLS, so a
// message that requires it is deferred on both paths — direct, although
// DANE authenticates the MX, and through the verified relay — and
// never arrives.
func TestPeersREQUIRETLS(t *testing.T) {
	env := peertest.Require(t)
	relay := &Relay{Addr: env.SubmissionAddr, Username: env.SmarthostUser, Password: env.SmarthostPass,
		TLSConfig: &tls.Config{RootCAs: env.CertPool(t), ServerName: "localhost"}}
	for _, via := range []Via{Direct, Relayed} {
		t.Run(via.String(), func(t *testing.T) {
			m := dnssecMailer(t, env, Config{Relay: relay, Router: Rules{{Domains: []string{"*"}, Via: via}},
				Fallback: FallbackPolicy{Never: true}})
			body, _ := uniqueBody(t)
			ctx, cancel := context.WithTimeout(WithREQUIRETLS(context.Background()), 20*time.Second)
			defer cancel()
			res, _ := m.Send(ctx, "a@sender.test", []string{"tls-requiretls@example.org"}, strings.NewReader(body))
			r := wantStatus(t, res, "tls-requiretls@example.org", Deferred)
			if !errors.Is(r.Err, ErrREQUIRETLS) {
				t.Errorf("err %v, want ErrREQUIRETLS", r.Err)
			}
		})
	}
}

// TestPeersDKIMOverSigning: a message signed here and delivered through
// real Postfix verifies with go-msgauth as Postfix stored it, and stops
// verifying when a Subject or Reply-To is prepended to it.
func TestPeersDKIMOverSigning(t *testing.T) {
	env := peertest.Require(t)
	sig := DKIMSignature{Domain: "sender.test", Selector: "peer", Signer: testEd25519(t)}
	rec, err := sig.Record()
	if err != nil {
		t.Fatal(err)
	}
	m := peerMailer(t, env, Config{Router: Rules{{Domains: []string{"*"}, Via: Direct}}, DKIM: []DKIMSignature{sig}})
	body, id := uniqueBody(t)
	if _, err := send(t, m, "a@sender.test", []string{"tls-dkim@example.org"}, body); err != nil {
		t.Fatal(err)
	}
	mail := env.WaitMaildir(t, env.PostfixMaildir, peertest.HeaderIs("Message-ID", id), 10*time.Second)
	verify := func(msg []byte) error {
		vs, err := dkim.VerifyWithOptions(strings.NewReader(string(msg)), &dkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) {
				if name == sig.RecordName() {
					return []string{rec}, nil
				}
				return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
			},
		})
		if err != nil {
			return err
		}
		if len(vs) != 1 {
			return errors.New("not one signature")
		}
		return vs[0].Err
	}
	stored := mail.Message()
	if err := verify(stored); err != nil {
		t.Fatalf("the message as Postfix stored it: %v\n%s", err, stored[:min(len(stored), 800)])
	}
	for _, added := range []string{"Subject: urgent: new bank details\r\n", "Reply-To: attacker@evil.test\r\n", "Content-Type: text/html\r\n"} {
		if err := verify(append([]byte(added), stored...)); err == nil {
			t.Errorf("%q prepended: still verifies", strings.TrimSpace(added))
		}
	}
}
