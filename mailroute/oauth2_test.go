package mailroute

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

// tokenIssuer is an OAuth 2.0 token endpoint (httptest) and the registry
// a relay checks bearer tokens against: it answers the refresh_token
// grant with a new access token each time, valid for ttl.
type tokenIssuer struct {
	srv *httptest.Server
	ttl time.Duration

	mu      sync.Mutex
	issued  map[string]time.Time // token → expiry
	user    string
	grants  int
	failing bool
}

func newTokenIssuer(t *testing.T, user string, ttl time.Duration) *tokenIssuer {
	ti := &tokenIssuer{ttl: ttl, issued: map[string]time.Time{}, user: user}
	ti.srv = httptest.NewServer(http.HandlerFunc(ti.serveToken))
	t.Cleanup(ti.srv.Close)
	return ti
}

func (ti *tokenIssuer) serveToken(w http.ResponseWriter, r *http.Request) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if ti.failing {
		http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusServiceUnavailable)
		return
	}
	if r.FormValue("grant_type") != "refresh_token" || r.FormValue("refresh_token") != "refresh-1" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"invalid_grant"}`))
		return
	}
	ti.grants++
	tok := fmt.Sprintf("access-%d", ti.grants)
	ti.issued[tok] = time.Now().Add(ti.ttl)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "token_type": "Bearer", "expires_in": int(ti.ttl / time.Second),
	})
}

// check is the relay's side: the token was issued for user and has not
// expired.
func (ti *tokenIssuer) check(user, token string) bool {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	exp, ok := ti.issued[token]
	return ok && user == ti.user && time.Now().Before(exp)
}

// tokenSource is what an application builds: a refresh token turned into
// access tokens by the endpoint, cached until they expire.
func (ti *tokenIssuer) tokenSource() oauth2.TokenSource {
	conf := &oauth2.Config{ClientID: "app", Endpoint: oauth2.Endpoint{TokenURL: ti.srv.URL, AuthStyle: oauth2.AuthStyleInParams}}
	return conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: "refresh-1"})
}

// oauthRelay starts a relay on verified STARTTLS that takes bearer
// tokens from the issuer only.
func oauthRelay(t *testing.T, ti *tokenIssuer, mechs []string) (*smtptest.Server, *testpki.CA) {
	ca := testpki.New(t)
	s := smtptest.Start(t, smtptest.Options{
		TLS:              ca.ServerConfig("127.0.0.1", "relay.test"),
		OAuth2:           ti.check,
		OAuth2Mechanisms: mechs,
	})
	return s, ca
}

// Each new session takes its own token from the TokenSource: the tokens
// here live 5 seconds, under oauth2's 10-second expiry margin, so every
// session refreshes, and the relay sees two different tokens accepted.
func TestOAuth2FreshTokenPerSession(t *testing.T) {
	for _, mechs := range [][]string{{"XOAUTH2"}, {"OAUTHBEARER"}, nil} {
		t.Run(fmt.Sprint(mechs), func(t *testing.T) {
			ti := newTokenIssuer(t, "app@sender.test", 5*time.Second)
			s, ca := oauthRelay(t, ti, mechs)
			m := (&relayWorld{t: t, s: s}).mailer(&Relay{
				Addr: s.Addr, Username: "app@sender.test", TokenSource: ti.tokenSource(),
				TLSConfig: &tls.Config{RootCAs: ca.Pool()}, MaxIdle: -1, // a new session per transaction
			})
			for i := range 2 {
				if _, err := send(t, m, "a@sender.test", []string{fmt.Sprintf("b%d@dest.test", i)}, testBody); err != nil {
					t.Fatal(err)
				}
			}
			msgs := s.Messages()
			if len(msgs) != 2 || msgs[0].AuthUser != "app@sender.test" || msgs[1].AuthUser != "app@sender.test" {
				t.Fatalf("relay got %d messages", len(msgs))
			}
			if ti.grants != 2 {
				t.Errorf("%d token grants for 2 sessions, want 2", ti.grants)
			}
			want := "OAUTHBEARER" // preferred when offered: the standard one
			if len(mechs) == 1 {
				want = mechs[0]
			}
			if msgs[0].AuthMechanism != want || msgs[1].AuthMechanism != want {
				t.Errorf("authenticated with %s and %s, want %s", msgs[0].AuthMechanism, msgs[1].AuthMechanism, want)
			}
			if tr := s.Transcript(); bytes.Contains(tr, []byte("AUTH")) {
				t.Errorf("AUTH in plaintext: %q", tr)
			}
		})
	}
}

// A token the relay refuses: the JSON in its 334 challenge becomes an
// *OAuth2Error, the recipient is Deferred (a configuration problem, not a
// bounce), and nothing is sent.
func TestOAuth2RefusedTokenDecodesChallenge(t *testing.T) {
	for _, mech := range []string{"XOAUTH2", "OAUTHBEARER"} {
		t.Run(mech, func(t *testing.T) {
			ti := newTokenIssuer(t, "app@sender.test", time.Hour)
			s, ca := oauthRelay(t, ti, []string{mech})
			stale := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "revoked", TokenType: "Bearer", Expiry: time.Now().Add(time.Hour)})
			m := (&relayWorld{t: t, s: s}).mailer(&Relay{
				Addr: s.Addr, Username: "app@sender.test", TokenSource: stale, TLSConfig: &tls.Config{RootCAs: ca.Pool()},
			})
			res, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
			rr := wantStatus(t, res, "b@dest.test", Deferred)
			var oe *OAuth2Error
			if !errors.As(err, &oe) || !errors.Is(err, ErrRelayAuth) {
				t.Fatalf("err %v, want an OAuth2Error and ErrRelayAuth", err)
			}
			if oe.Mechanism != mech || oe.Scope != "https://mail.google.com/" || (oe.Status != "invalid_token" && oe.Status != "401") {
				t.Errorf("OAuth2Error %+v", oe)
			}
			var e *Error
			if !errors.As(rr.Err, &e) || e.Code != 535 || e.Command != "AUTH" {
				t.Errorf("err %v, want the final 535 to AUTH", rr.Err)
			}
			if !strings.Contains(err.Error(), "it needs scope https://mail.google.com/") {
				t.Errorf("error text %q", err)
			}
			if len(s.Messages()) != 0 {
				t.Error("mail went through with a refused token")
			}
		})
	}
}

// Faults on the way to a token: each keeps the mail (Deferred, wrapping
// ErrRelayAuth) and never sends AUTH or mail.
func TestOAuth2Faults(t *testing.T) {
	tests := []struct {
		name  string
		mechs []string
		ts    func(ti *tokenIssuer) oauth2.TokenSource
		want  string
	}{
		{"token endpoint down", nil, func(ti *tokenIssuer) oauth2.TokenSource {
			ti.failing = true
			return ti.tokenSource()
		}, "getting an OAuth 2.0 token"},
		{"refresh token refused", nil, func(ti *tokenIssuer) oauth2.TokenSource {
			conf := &oauth2.Config{ClientID: "app", Endpoint: oauth2.Endpoint{TokenURL: ti.srv.URL, AuthStyle: oauth2.AuthStyleInParams}}
			return conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: "wrong"})
		}, "invalid_grant"},
		{"expired static token", nil, func(*tokenIssuer) oauth2.TokenSource {
			return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "old", Expiry: time.Now().Add(-time.Minute)})
		}, "expired or empty token"},
		{"relay without XOAUTH2 or OAUTHBEARER", []string{}, func(ti *tokenIssuer) oauth2.TokenSource {
			return ti.tokenSource()
		}, "needs XOAUTH2 or OAUTHBEARER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ti := newTokenIssuer(t, "app@sender.test", time.Hour)
			ca := testpki.New(t)
			opts := smtptest.Options{TLS: ca.ServerConfig("127.0.0.1"), OAuth2: ti.check, OAuth2Mechanisms: tt.mechs}
			if tt.mechs != nil && len(tt.mechs) == 0 {
				opts.Auth = map[string]string{"app@sender.test": "pw"} // PLAIN and LOGIN only
			}
			s := smtptest.Start(t, opts)
			m := (&relayWorld{t: t, s: s}).mailer(&Relay{
				Addr: s.Addr, Username: "app@sender.test", TokenSource: tt.ts(ti), TLSConfig: &tls.Config{RootCAs: ca.Pool()},
			})
			res, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
			wantStatus(t, res, "b@dest.test", Deferred)
			if !errors.Is(err, ErrRelayAuth) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want ErrRelayAuth and %q", err, tt.want)
			}
			if len(s.Attempts()) != 0 {
				t.Error("a transaction was attempted without authenticating")
			}
		})
	}
}

func TestOAuth2RelayConfig(t *testing.T) {
	ts := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"})
	for _, r := range []*Relay{
		{Addr: "smtp.gmail.com:587", TokenSource: ts},
		{Addr: "smtp.gmail.com:587", Username: "a@gmail.com", Password: "pw", TokenSource: ts},
	} {
		if _, err := New(Config{Hostname: "mail.example.net", Relay: r}); err == nil || !strings.Contains(err.Error(), "TokenSource") {
			t.Errorf("New with %+v: %v", r, err)
		}
	}
}
