package mailroute

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
)

// OAuth 2.0 for relays: Gmail and Microsoft 365 take a bearer token
// instead of a password (Microsoft is turning basic SMTP AUTH off). The
// token comes from Relay.TokenSource, asked for each new session so that
// a pooled relay never presents an expired one, and goes out by
// OAUTHBEARER (RFC 7628) or XOAUTH2, Google's and Microsoft's older
// mechanism with the same token.

// Mechanism names.
const (
	mechXOAuth2     = "XOAUTH2"
	mechOAuthBearer = sasl.OAuthBearer
)

// OAuth2Error is a relay's refusal of an OAuth 2.0 token, decoded from the
// JSON the relay sends in its 334 challenge before the final 535 (RFC 7628
// §3.2.2; Gmail's and Microsoft's XOAUTH2 send the same fields). It is
// reachable with errors.As from the recipient's error, which also wraps
// ErrRelayAuth.
type OAuth2Error struct {
	// Mechanism is "XOAUTH2" or "OAUTHBEARER".
	Mechanism string
	// Status is the server's verdict: "invalid_token" (expired or revoked),
	// "insufficient_scope", or with XOAUTH2 an HTTP status such as "400"
	// or "401".
	Status string `json:"status"`
	// Scope is the scope a token needs, when the server says:
	// "https://mail.google.com/" for Gmail,
	// "https://outlook.office.com/SMTP.Send" for Microsoft 365.
	Scope string `json:"scope"`
	// Schemes are the token types the server takes, usually "Bearer".
	Schemes string `json:"schemes"`
}

// Error says what the relay refused and what it wanted. The server's
// words are quoted when they hold anything but printable text, so that a
// hostile challenge cannot forge lines in a log.
func (e *OAuth2Error) Error() string {
	var b strings.Builder
	b.WriteString("the relay refused the OAuth 2.0 token (" + e.Mechanism)
	if e.Status != "" {
		b.WriteString(", status " + printable(e.Status))
	}
	b.WriteString(")")
	switch {
	case e.Status == "invalid_token" || e.Status == "401":
		b.WriteString(": expired, revoked or issued for another account")
	case e.Status == "insufficient_scope" || e.Status == "403":
		b.WriteString(": the token lacks the scope")
	}
	if e.Scope != "" {
		b.WriteString("; it needs scope " + printable(e.Scope))
	}
	return b.String()
}

// printable returns s as is when it is printable ASCII, else quoted.
func printable(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return strconv.Quote(s)
		}
	}
	return s
}

// oauth2AuthFor returns the AuthFor of a relay with a TokenSource: asked
// at AUTH time, it takes a token and picks the mechanism the relay offers.
func oauth2AuthFor(r *Relay) func(tls bool, mechanisms []string) (sasl.Client, error) {
	host, portText, _ := net.SplitHostPort(r.Addr) // checked in New
	port, _ := strconv.Atoi(portText)
	return func(_ bool, mechanisms []string) (sasl.Client, error) {
		mech := ""
		for _, want := range []string{mechOAuthBearer, mechXOAuth2} {
			for _, m := range mechanisms {
				if strings.EqualFold(m, want) && mech == "" {
					mech = want
				}
			}
		}
		if mech == "" {
			return nil, fmt.Errorf("the relay offers AUTH %s, and OAuth 2.0 needs XOAUTH2 or OAUTHBEARER", strings.Join(mechanisms, " "))
		}
		tok, err := r.TokenSource.Token()
		if err != nil {
			return nil, fmt.Errorf("getting an OAuth 2.0 token: %w", err)
		}
		// Not tok.Valid(), which counts a token as expired 10 seconds
		// early: one that is still good is good for AUTH now.
		if tok == nil || tok.AccessToken == "" || !tok.Expiry.IsZero() && !time.Now().Before(tok.Expiry) {
			return nil, errors.New("the OAuth 2.0 token source gave an expired or empty token")
		}
		if typ := tok.Type(); !strings.EqualFold(typ, "Bearer") {
			return nil, fmt.Errorf("the OAuth 2.0 token is of type %q; relays take Bearer tokens", typ)
		}
		return &bearerClient{mech: mech, user: r.Username, token: tok.AccessToken, host: host, port: port}, nil
	}
}

// bearerClient sends one token by XOAUTH2 or OAUTHBEARER.
type bearerClient struct {
	mech, user, token, host string
	port                    int
	failure                 *OAuth2Error
}

func (c *bearerClient) Start() (string, []byte, error) {
	if c.mech == mechXOAuth2 {
		return c.mech, []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
	}
	// RFC 7628 §3.1: a GS2 header naming the user (',' and '=' escaped as
	// in RFC 5801), then host, port and the token.
	authzid := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(c.user)
	ir := "n,a=" + authzid + ",\x01host=" + c.host + "\x01port=" + strconv.Itoa(c.port) +
		"\x01auth=Bearer " + c.token + "\x01\x01"
	return c.mech, []byte(ir), nil
}

// Next answers the server's error challenge: it keeps the decoded error
// for AuthFailure and sends the dummy response that lets the server finish
// with its 5xx (XOAUTH2: empty; OAUTHBEARER: %x01, RFC 7628 §3.2.3).
func (c *bearerClient) Next(challenge []byte) ([]byte, error) {
	if c.failure != nil {
		return nil, errors.New("a second challenge after the OAuth 2.0 error")
	}
	e := &OAuth2Error{}
	if err := json.Unmarshal(challenge, e); err != nil {
		e = &OAuth2Error{Status: "unreadable error challenge " + strconv.Quote(truncateText(string(challenge), 80))}
	}
	if len(e.Status) > 200 || len(e.Scope) > 500 {
		// A server's JSON is not a place for essays: keep errors short.
		e.Status, e.Scope = truncateText(e.Status, 200), truncateText(e.Scope, 500)
	}
	e.Mechanism = c.mech
	c.failure = e
	if c.mech == mechXOAuth2 {
		return []byte{}, nil
	}
	return []byte{1}, nil
}

// AuthFailure gives the decoded error challenge, if there was one.
func (c *bearerClient) AuthFailure() error {
	if c.failure == nil {
		return nil
	}
	return c.failure
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
