package mailroute

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzBearerChallenge feeds the OAuth 2.0 clients whatever a relay might
// send in its error challenge. Invariants: the client answers with its
// mechanism's dummy response (so the server can end the exchange with its
// 5xx), keeps an *OAuth2Error for the final error, a second challenge is
// refused, and the error's text is one line of printable text whatever
// the server wrote.
func FuzzBearerChallenge(f *testing.F) {
	f.Add([]byte(`{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`))
	f.Add([]byte(`{"status":"invalid_token","scope":"https://outlook.office.com/SMTP.Send"}`))
	f.Add([]byte(`{"status":"x\r\n250 OK","scope":"\u0000"}`))
	f.Add([]byte("not json"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, challenge []byte) {
		for _, mech := range []string{mechXOAuth2, mechOAuthBearer} {
			c := &bearerClient{mech: mech, user: "a@example.com", token: "t", host: "smtp.example.com", port: 587}
			resp, err := c.Next(challenge)
			want := []byte{1}
			if mech == mechXOAuth2 {
				want = []byte{}
			}
			if err != nil || !bytes.Equal(resp, want) {
				t.Fatalf("%s: Next = %q, %v; want the dummy response %q", mech, resp, err, want)
			}
			var oe *OAuth2Error
			if !errors.As(c.AuthFailure(), &oe) || oe.Mechanism != mech {
				t.Fatalf("%s: AuthFailure = %v", mech, c.AuthFailure())
			}
			msg := oe.Error()
			if strings.ContainsAny(msg, "\r\n\x00") || len(msg) > 1200 {
				t.Fatalf("%s: error text %q", mech, msg)
			}
			if _, err := c.Next(challenge); err == nil {
				t.Fatalf("%s: a second challenge was answered", mech)
			}
		}
	})
}
