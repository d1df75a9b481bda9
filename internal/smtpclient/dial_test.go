package smtpclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

func dial(t *testing.T, addr string, cfg *Config) *Conn {
	t.Helper()
	if cfg == nil {
		cfg = &Config{LocalName: "client.test"}
	}
	c, err := Dial(testCtx(t), addr, "mx.test", cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestDialPlain(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{MaxMessageBytes: 12345})
	c := dial(t, srv.Addr, nil)
	if _, ok := c.Extension("pipelining"); !ok {
		t.Error("PIPELINING not seen (case-insensitive lookup)")
	}
	if got := c.MaxSize(); got != 12345 {
		t.Errorf("MaxSize = %d", got)
	}
	if _, ok := c.TLS(); ok {
		t.Error("TLS reported on a plaintext session")
	}
	if c.Host() != "mx.test" || !c.Usable() {
		t.Errorf("Host %q, Usable %v", c.Host(), c.Usable())
	}
	if err := c.Noop(testCtx(t)); err != nil {
		t.Errorf("Noop: %v", err)
	}
	if err := c.Reset(testCtx(t)); err != nil {
		t.Errorf("Reset: %v", err)
	}
	if err := c.Quit(testCtx(t)); err != nil {
		t.Errorf("Quit: %v", err)
	}
	if c.Usable() {
		t.Error("usable after Quit")
	}
	if err := c.Noop(testCtx(t)); !errors.Is(err, ErrUnusable) {
		t.Errorf("Noop after Quit = %v", err)
	}
	tr := string(srv.Transcript())
	if strings.Count(tr, "EHLO ") != 1 || !strings.Contains(tr, "RSET\r\n") || !strings.Contains(tr, "QUIT\r\n") {
		t.Errorf("transcript %q: want one EHLO (RSET must not re-send it), RSET, QUIT", tr)
	}
}

func TestDialGreeting421(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Greeting421: true})
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{})
	e := asError(t, err)
	if e.Command != "greeting" || e.Code != 421 || !e.Temporary() || e.Host != "mx.test" {
		t.Errorf("error %+v: want greeting 421 temporary", e)
	}
	if e.Enhanced != [3]int{4, 3, 2} || e.Message != "busy" {
		t.Errorf("reply %v %q", e.Enhanced, e.Message)
	}
	if got := e.Error(); got != "smtpclient: mx.test: greeting: 421 4.3.2 busy" {
		t.Errorf("Error() = %q", got)
	}
}

func TestDialGreeting554(t *testing.T) {
	addr := scripted(t, func(p *peer) { p.send("554 5.7.1 go away\r\n"); p.line() })
	_, err := Dial(testCtx(t), addr, "mx.test", &Config{})
	if e := asError(t, err); e.Command != "greeting" || !e.Permanent || e.Code != 554 || !IsPermanent(err) {
		t.Errorf("error %+v", e)
	}
}

func TestDialMultilineGreetingAndEHLO(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.send("220-scripted.test ESMTP\r\n220-no UCE\r\n220 welcome\r\n")
		p.expect("EHLO client.test")
		p.send("250-scripted.test\r\n250-8bitmime\r\n250-Size 5000\r\n250 smtputf8\r\n")
		p.expect("QUIT")
		p.send("221 bye\r\n")
	})
	c := dial(t, addr, nil)
	for _, k := range []string{"8BITMIME", "SMTPUTF8", "size"} {
		if _, ok := c.Extension(k); !ok {
			t.Errorf("extension %s missing", k)
		}
	}
	if c.MaxSize() != 5000 {
		t.Errorf("MaxSize = %d", c.MaxSize())
	}
	if err := c.Quit(testCtx(t)); err != nil {
		t.Error(err)
	}
}

func TestDialHELOFallback(t *testing.T) {
	body := "Subject: x\r\n\r\nhello\r\n"
	got := make(chan string, 1)
	addr := scripted(t, func(p *peer) {
		p.send("220 old.test\r\n")
		p.expect("EHLO ")
		p.send("502 5.5.2 what?\r\n")
		p.expect("HELO client.test")
		p.send("250 old.test\r\n")
		p.exact("MAIL FROM:<a@x.test>") // no ESMTP parameters after HELO
		p.send("250 ok\r\n")
		p.expect("RCPT TO:<b@y.test>")
		p.send("250 ok\r\n")
		p.expect("DATA")
		p.send("354 go\r\n")
		got <- p.readData()
		p.send("250 queued\r\n")
		p.line()
	})
	c := dial(t, addr, nil)
	if len(c.ext) != 0 || !c.helo {
		t.Errorf("ext %v after HELO", c.ext)
	}
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(body),
		Size: int64(len(body)), EightBit: true})
	if err != nil || res.Rcpts[0].Err != nil || res.Data.Code != 250 {
		t.Fatalf("Send: %v %+v", err, res)
	}
	if d := <-got; d != body {
		t.Errorf("server got %q", d)
	}
}

func TestDialGreetingTimeout(t *testing.T) {
	addr := scripted(t, func(p *peer) { p.wait() })
	start := time.Now()
	_, err := Dial(testCtx(t), addr, "mx.test", &Config{Timeouts: Timeouts{Greeting: 100 * time.Millisecond}})
	e := asError(t, err)
	if e.Command != "greeting" || e.Permanent || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("error %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestDialContextCancel(t *testing.T) {
	addr := scripted(t, func(p *peer) { p.wait() })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := Dial(ctx, addr, "mx.test", &Config{})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Dial returned after %v", d)
	}
	if !errors.Is(err, context.Canceled) || asError(t, err).Command != "greeting" {
		t.Errorf("error %v: want greeting, context.Canceled", err)
	}
	if _, err := Dial(ctx, addr, "mx.test", &Config{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with a cancelled ctx: %v", err)
	}
}

func TestDialConnectRefused(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	_, err := Dial(testCtx(t), addr, "", &Config{})
	if e := asError(t, err); e.Command != "connect" || e.Permanent || e.Host != "127.0.0.1" {
		t.Errorf("error %+v", e)
	}
}

func TestDialProtocolError(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.send("220 ok\r\n")
		p.expect("EHLO")
		p.send("250-a\r\n251 mixed\r\n")
	})
	_, err := Dial(testCtx(t), addr, "mx.test", &Config{})
	if !errors.Is(err, ErrProtocol) || asError(t, err).Command != "EHLO" {
		t.Errorf("error %v", err)
	}
}

// A reply pipelined by the server after its STARTTLS 220 arrives in
// plaintext and must not be taken as a reply over TLS.
func TestStartTLSInjection(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet("STARTTLS")
		p.expect("STARTTLS")
		p.send("220 go ahead\r\n250 injected\r\n")
		p.line()
	})
	_, err := Dial(testCtx(t), addr, "mx.test", &Config{})
	if !errors.Is(err, ErrProtocol) || asError(t, err).Command != "STARTTLS" {
		t.Errorf("error %v", err)
	}
}

func TestStartTLSOpportunisticSelfSigned(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: &tls.Config{Certificates: []tls.Certificate{testpki.SelfSigned("mx.test")}}})
	c := dial(t, srv.Addr, &Config{LocalName: "client.test", TLS: TLSOpportunistic})
	if st, ok := c.TLS(); !ok || !st.HandshakeComplete {
		t.Fatal("no TLS after opportunistic STARTTLS")
	}
	if _, ok := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS still advertised: EHLO was not repeated after TLS")
	}
	sendOne(t, c, "a@x.test", "b@y.test")
	if m := srv.Messages(); len(m) != 1 || !m[0].TLS || m[0].Helo != "client.test" {
		t.Errorf("messages %+v", m)
	}
}

func TestStartTLSOpportunisticNotOffered(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	c := dial(t, srv.Addr, &Config{TLS: TLSOpportunistic})
	if _, ok := c.TLS(); ok {
		t.Error("TLS without STARTTLS")
	}
	sendOne(t, c, "a@x.test", "b@y.test")
}

// A server refusing STARTTLS with a reply leaves an opportunistic session in
// plaintext; a required one fails.
func TestStartTLSRefusedByReply(t *testing.T) {
	script := func(p *peer) {
		p.greet("STARTTLS")
		p.expect("STARTTLS")
		p.send("454 4.7.0 TLS not available\r\n")
		if l := p.line(); strings.HasPrefix(l, "NOOP") {
			p.send("250 ok\r\n")
			p.line()
		}
	}
	c := dial(t, scripted(t, script), &Config{TLS: TLSOpportunistic})
	if err := c.Noop(testCtx(t)); err != nil {
		t.Errorf("opportunistic session after 454: %v", err)
	}
	_, err := Dial(testCtx(t), scripted(t, script), "mx.test", &Config{TLS: TLSRequired})
	if !errors.Is(err, ErrTLSUnavailable) || asError(t, err).Code != 454 {
		t.Errorf("required: %v", err)
	}
}

func TestStartTLSRequiredVerified(t *testing.T) {
	ca := testpki.New(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: ca.ServerConfig("mx.test")})
	c := dial(t, srv.Addr, &Config{TLS: TLSRequired, TLSConfig: ca.ClientConfig("")})
	st, ok := c.TLS()
	if !ok || len(st.VerifiedChains) == 0 || st.ServerName != "mx.test" {
		t.Fatalf("TLS state %v %+v", ok, st)
	}
	sendOne(t, c, "a@x.test", "b@y.test")
}

func TestStartTLSRequiredWrongName(t *testing.T) {
	ca := testpki.New(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: ca.ServerConfig("other.test")})
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSRequired, TLSConfig: ca.ClientConfig("")})
	e := asError(t, err)
	if !errors.Is(err, ErrTLSFailed) || e.Command != "STARTTLS" || e.Permanent {
		t.Errorf("error %v", err)
	}
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		t.Errorf("error %v does not carry the verification error", err)
	}
	if tr := srv.Transcript(); bytes.Contains(tr, []byte("MAIL")) {
		t.Errorf("MAIL sent: %q", tr)
	}
}

func TestStartTLSRequiredNotOffered(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSRequired})
	if e := asError(t, err); !errors.Is(err, ErrTLSUnavailable) || e.Command != "STARTTLS" || e.Permanent {
		t.Errorf("error %v", err)
	}
	if tr := srv.Transcript(); bytes.Contains(tr, []byte("MAIL")) || bytes.Contains(tr, []byte("STARTTLS")) {
		t.Errorf("transcript %q", tr)
	}
}

// BrokenTLS fails the opportunistic handshake with ErrTLSFailed; the caller
// then redials with TLSNone and delivers in plaintext.
func TestStartTLSBroken(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{BrokenTLS: true})
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSOpportunistic})
	if e := asError(t, err); !errors.Is(err, ErrTLSFailed) || e.Command != "STARTTLS" || !e.Temporary() {
		t.Fatalf("error %v", err)
	}
	c := dial(t, srv.Addr, &Config{TLS: TLSNone})
	sendOne(t, c, "a@x.test", "b@y.test")
	if m := srv.Messages(); len(m) != 1 || m[0].TLS {
		t.Errorf("messages %+v", m)
	}
}

func TestImplicitTLS(t *testing.T) {
	ca := testpki.New(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: ca.ServerConfig("mx.test"), ImplicitTLS: true,
		Auth: map[string]string{"u": "p"}})
	c := dial(t, srv.Addr, &Config{TLS: TLSImplicit, TLSConfig: ca.ClientConfig(""), Username: "u", Password: "p"})
	if _, ok := c.TLS(); !ok {
		t.Fatal("no TLS")
	}
	sendOne(t, c, "a@x.test", "b@y.test")
	if m := srv.Messages(); len(m) != 1 || !m[0].TLS || m[0].AuthUser != "u" {
		t.Errorf("messages %+v", m)
	}
}

func TestImplicitTLSBroken(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{ImplicitTLS: true, BrokenTLS: true, TLS: &tls.Config{}})
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSImplicit})
	if e := asError(t, err); !errors.Is(err, ErrTLSFailed) || e.Command != "connect" {
		t.Errorf("error %v", err)
	}
}

func TestImplicitTLSUntrusted(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{ImplicitTLS: true,
		TLS: &tls.Config{Certificates: []tls.Certificate{testpki.SelfSigned("mx.test")}}})
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSImplicit})
	if !errors.Is(err, ErrTLSFailed) {
		t.Errorf("error %v", err)
	}
}

// Plaintext injected after the STARTTLS 220 is the same fault whether it
// arrives in the 220's packet or in a later one (read by the handshake as
// a TLS record): a protocol error, never a TLS failure, which a caller
// would retry in plaintext.
func TestStartTLSInjectionAnyPacketBoundary(t *testing.T) {
	for _, split := range []bool{false, true} {
		addr := scripted(t, func(p *peer) {
			p.greet("STARTTLS")
			p.expect("STARTTLS")
			if !split {
				p.send("220 go ahead\r\n250 injected\r\n")
			} else {
				p.send("220 go ahead\r\n")
				p.r.Peek(1) // the ClientHello: the client is in the handshake
				p.send("250 injected\r\n")
			}
			p.wait()
		})
		_, err := Dial(testCtx(t), addr, "mx.test", &Config{})
		if !errors.Is(err, ErrProtocol) || errors.Is(err, ErrTLSFailed) || asError(t, err).Command != "STARTTLS" {
			t.Errorf("split %v: error %v", split, err)
		}
	}
}
