package smtpclient

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"

	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

func authServer(t *testing.T, extra smtptest.Options) (*smtptest.Server, *testpki.CA) {
	ca := testpki.New(t)
	extra.TLS = ca.ServerConfig("mx.test")
	extra.Auth = map[string]string{"user@x.test": "s3cret"}
	return smtptest.Start(t, extra), ca
}

func TestAuth(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"PLAIN chosen from credentials", Config{Username: "user@x.test", Password: "s3cret"}},
		{"explicit PLAIN", Config{Auth: sasl.NewPlainClient("", "user@x.test", "s3cret")}},
		{"explicit LOGIN", Config{Auth: sasl.NewLoginClient("user@x.test", "s3cret")}},
		{"LOGIN via Credentials", Config{Auth: mustClient(t, []string{"LOGIN"})}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, ca := authServer(t, smtptest.Options{})
			cfg := tt.cfg
			cfg.TLS, cfg.TLSConfig = TLSRequired, ca.ClientConfig("")
			c := dial(t, srv.Addr, &cfg)
			sendOne(t, c, "user@x.test", "b@y.test")
			if m := srv.Messages(); len(m) != 1 || m[0].AuthUser != "user@x.test" {
				t.Errorf("messages %+v", m)
			}
		})
	}
}

func mustClient(t *testing.T, mechs []string) sasl.Client {
	cl, err := Credentials{"user@x.test", "s3cret"}.Client(mechs)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestAuthWrongPassword(t *testing.T) {
	srv, ca := authServer(t, smtptest.Options{})
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSRequired, TLSConfig: ca.ClientConfig(""),
		Username: "user@x.test", Password: "wrong"})
	e := asError(t, err)
	if !errors.Is(err, ErrAuthFailed) || e.Code != 535 || !e.Permanent || e.Command != "AUTH" {
		t.Errorf("error %v", err)
	}
}

// Credentials on a plaintext session are refused before any AUTH byte is
// written, even though the server offers AUTH there.
func TestAuthRefusedWithoutTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Auth: map[string]string{"u": "p"}, AllowInsecureAuth: true,
		TLS: testpki.New(t).ServerConfig("mx.test")})
	for _, cfg := range []*Config{
		{TLS: TLSNone, Username: "u", Password: "p"},
		{TLS: TLSNone, Auth: sasl.NewPlainClient("", "u", "p")},
	} {
		_, err := Dial(testCtx(t), srv.Addr, "mx.test", cfg)
		if e := asError(t, err); !errors.Is(err, ErrAuthRefusedInsecure) || e.Command != "AUTH" {
			t.Errorf("error %v", err)
		}
	}
	if tr := srv.Transcript(); bytes.Contains(tr, []byte("AUTH")) {
		t.Errorf("AUTH on the wire: %q", tr)
	}
}

// AllowInsecureAuth is honoured on loopback.
func TestAuthInsecureLoopbackOptIn(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Auth: map[string]string{"u": "p"}, AllowInsecureAuth: true})
	c := dial(t, srv.Addr, &Config{TLS: TLSNone, Username: "u", Password: "p", AllowInsecureAuth: true})
	sendOne(t, c, "a@x.test", "b@y.test")
	if m := srv.Messages(); len(m) != 1 || m[0].AuthUser != "u" {
		t.Errorf("messages %+v", m)
	}
}

func TestAuthNoMechanism(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: testpki.New(t).ServerConfig("mx.test")})
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{Username: "u", Password: "p"})
	if !errors.Is(err, ErrNoAuthMechanism) {
		t.Errorf("error %v", err)
	}
	if _, err := (Credentials{"u", "p"}).Client([]string{"XOAUTH2", "GSSAPI"}); !errors.Is(err, ErrNoAuthMechanism) ||
		!strings.Contains(err.Error(), "XOAUTH2 GSSAPI") {
		t.Errorf("Client error %v should name the offered mechanisms", err)
	}
}

func TestAuthCramMD5Scripted(t *testing.T) {
	// RFC 2195 §2 example.
	const challenge = "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
	const response = "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
	addr := scripted(t, func(p *peer) {
		p.greet("AUTH CRAM-MD5")
		p.exact("AUTH CRAM-MD5")
		p.send("334 " + challenge + "\r\n")
		if l := p.line(); l != response {
			p.t.Errorf("response %q", l)
			p.send("535 no\r\n")
			return
		}
		p.send("235 2.7.0 ok\r\n")
		p.line()
	})
	dial(t, addr, &Config{TLS: TLSNone, Username: "tim", Password: "tanstaaftanstaaf", AllowInsecureAuth: true})
}

// A LOGIN server that ignores the initial response and asks "Username:".
func TestAuthLoginUsernamePrompt(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet("AUTH LOGIN")
		p.expect("AUTH LOGIN")
		p.send("334 VXNlcm5hbWU6\r\n") // Username:
		if l := p.line(); l != "dQ==" {
			p.t.Errorf("username %q", l)
		}
		p.send("334 UGFzc3dvcmQ6\r\n") // Password:
		if l := p.line(); l != "cA==" {
			p.t.Errorf("password %q", l)
		}
		p.send("235 ok\r\n")
		p.line()
	})
	dial(t, addr, &Config{TLS: TLSNone, Username: "u", Password: "p", AllowInsecureAuth: true})
}

func TestAuthTemporaryAndCancel(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet("AUTH PLAIN")
		p.expect("AUTH PLAIN")
		p.send("454 4.7.0 try later\r\n")
	})
	_, err := Dial(testCtx(t), addr, "mx.test", &Config{TLS: TLSNone, Username: "u", Password: "p", AllowInsecureAuth: true})
	if e := asError(t, err); !errors.Is(err, ErrAuthFailed) || e.Permanent || e.Code != 454 {
		t.Errorf("454: %v", err)
	}

	// A challenge that is not base64 is cancelled with "*".
	addr = scripted(t, func(p *peer) {
		p.greet("AUTH CRAM-MD5")
		p.expect("AUTH CRAM-MD5")
		p.send("334 !!!not base64\r\n")
		p.expect("*")
		p.send("501 5.7.0 cancelled\r\n")
	})
	_, err = Dial(testCtx(t), addr, "mx.test", &Config{TLS: TLSNone, Username: "u", Password: "p", AllowInsecureAuth: true})
	if !errors.Is(err, ErrAuthFailed) || !errors.Is(err, ErrProtocol) {
		t.Errorf("bad challenge: %v", err)
	}
}

func TestCramMD5(t *testing.T) {
	c := NewCramMD5Client("tim", "tanstaaftanstaaf")
	mech, ir, err := c.Start()
	if mech != "CRAM-MD5" || ir != nil || err != nil {
		t.Fatalf("Start = %q %q %v", mech, ir, err)
	}
	resp, _ := c.Next([]byte("<1896.697170952@postoffice.reston.mci.net>"))
	if string(resp) != "tim b913a602c7eda7a495b4e6e7334d3890" {
		t.Errorf("response %q", resp)
	}
}

// fakeRemote reports a non-loopback peer address for a loopback connection,
// so the loopback condition of AllowInsecureAuth can be tested without
// traffic leaving the machine.
type fakeRemote struct{ net.Conn }

func (fakeRemote) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.ParseIP("192.0.2.25"), Port: 25} }

type fakeRemoteDialer struct{ net.Dialer }

func (d *fakeRemoteDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return fakeRemote{c}, nil
}

func TestAuthInsecureNonLoopbackRefused(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Auth: map[string]string{"u": "p"}, AllowInsecureAuth: true})
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSNone, Username: "u", Password: "p",
		AllowInsecureAuth: true, Dialer: &fakeRemoteDialer{}})
	if !errors.Is(err, ErrAuthRefusedInsecure) {
		t.Errorf("error %v", err)
	}
	if tr := srv.Transcript(); bytes.Contains(tr, []byte("AUTH")) || srv.Connections() != 1 {
		t.Errorf("transcript %q", tr)
	}
}

// authForCall records what Config.AuthFor was asked.
type authForCall struct {
	tls   bool
	mechs string
}

// recordAuthFor returns an AuthFor hook that records its calls and answers
// with client (or err).
func recordAuthFor(calls *[]authForCall, client sasl.Client, err error) func(bool, []string) (sasl.Client, error) {
	return func(tls bool, mechs []string) (sasl.Client, error) {
		*calls = append(*calls, authForCall{tls, strings.Join(mechs, " ")})
		return client, err
	}
}

// AuthFor is asked at AUTH time with the session's real TLS state and the
// advertised mechanisms; its client authenticates, in preference to
// Username and Password.
func TestAuthFor(t *testing.T) {
	t.Run("after STARTTLS", func(t *testing.T) {
		srv, ca := authServer(t, smtptest.Options{})
		var calls []authForCall
		c := dial(t, srv.Addr, &Config{TLS: TLSRequired, TLSConfig: ca.ClientConfig(""),
			Username: "user@x.test", Password: "wrong",
			AuthFor: recordAuthFor(&calls, sasl.NewPlainClient("", "user@x.test", "s3cret"), nil)})
		sendOne(t, c, "user@x.test", "b@y.test")
		if want := []authForCall{{true, "PLAIN LOGIN"}}; !slices.Equal(calls, want) {
			t.Errorf("AuthFor calls %+v, want %+v", calls, want)
		}
		if m := srv.Messages(); len(m) != 1 || m[0].AuthUser != "user@x.test" {
			t.Errorf("messages %+v", m)
		}
	})
	t.Run("plaintext loopback", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{Auth: map[string]string{"u": "p"}, AllowInsecureAuth: true})
		var calls []authForCall
		c := dial(t, srv.Addr, &Config{TLS: TLSNone, AllowInsecureAuth: true,
			AuthFor: recordAuthFor(&calls, sasl.NewPlainClient("", "u", "p"), nil)})
		sendOne(t, c, "a@x.test", "b@y.test")
		if want := []authForCall{{false, "PLAIN LOGIN"}}; !slices.Equal(calls, want) {
			t.Errorf("AuthFor calls %+v, want %+v", calls, want)
		}
		if m := srv.Messages(); len(m) != 1 || m[0].AuthUser != "u" {
			t.Errorf("messages %+v", m)
		}
	})
	t.Run("Auth wins", func(t *testing.T) {
		srv, ca := authServer(t, smtptest.Options{})
		var calls []authForCall
		dial(t, srv.Addr, &Config{TLS: TLSRequired, TLSConfig: ca.ClientConfig(""),
			Auth:    sasl.NewPlainClient("", "user@x.test", "s3cret"),
			AuthFor: recordAuthFor(&calls, nil, errors.New("not asked"))})
		if len(calls) != 0 {
			t.Errorf("AuthFor asked although Auth is set: %+v", calls)
		}
	})
}

// An error from AuthFor ends the session before any AUTH is written.
func TestAuthForRefuses(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Auth: map[string]string{"u": "p"}, AllowInsecureAuth: true})
	cause := errors.New("unencrypted connection")
	var calls []authForCall
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSNone, AllowInsecureAuth: true,
		AuthFor: recordAuthFor(&calls, nil, cause)})
	e := asError(t, err)
	if !errors.Is(err, ErrAuthFailed) || !errors.Is(err, cause) || e.Command != "AUTH" || e.Code != 0 || e.Permanent {
		t.Errorf("error %#v", e)
	}
	if len(calls) != 1 || calls[0].tls {
		t.Errorf("AuthFor calls %+v", calls)
	}
	tr := srv.Transcript()
	if bytes.Contains(tr, []byte("AUTH")) || !bytes.Contains(tr, []byte("QUIT")) {
		t.Errorf("transcript %q: want QUIT and no AUTH", tr)
	}

	// A nil client without an error is refused the same way.
	_, err = Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSNone, AllowInsecureAuth: true,
		AuthFor: recordAuthFor(&calls, nil, nil)})
	if !errors.Is(err, ErrAuthFailed) {
		t.Errorf("nil client: %v", err)
	}
}

// The clear-text rule comes first: AuthFor is not even asked on a
// plaintext session without the loopback opt-in.
func TestAuthForStillRefusedWithoutTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Auth: map[string]string{"u": "p"}, AllowInsecureAuth: true})
	var calls []authForCall
	_, err := Dial(testCtx(t), srv.Addr, "mx.test", &Config{TLS: TLSNone,
		AuthFor: recordAuthFor(&calls, sasl.NewPlainClient("", "u", "p"), nil)})
	if !errors.Is(err, ErrAuthRefusedInsecure) || len(calls) != 0 {
		t.Errorf("error %v, AuthFor calls %+v", err, calls)
	}
	if bytes.Contains(srv.Transcript(), []byte("AUTH")) {
		t.Errorf("AUTH on the wire: %q", srv.Transcript())
	}
}
