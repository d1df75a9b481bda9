package smtptest

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// xoauth2 is Google's and Microsoft's mechanism name.
const xoauth2 = "XOAUTH2"

func (s *Server) oauth2Mechanisms() []string {
	if s.opts.OAuth2Mechanisms != nil {
		return s.opts.OAuth2Mechanisms
	}
	return []string{xoauth2, sasl.OAuthBearer}
}

// bearerServer is the server side of XOAUTH2 and OAUTHBEARER (RFC 7628)
// as Gmail and Microsoft 365 run it: the token arrives in the initial
// response (or the response to an empty challenge); a refused one gets a
// 334 whose text is a JSON error, the client answers it with a dummy
// response, and the exchange ends with 535 5.7.8.
type bearerServer struct {
	mech   string
	s      *session
	failed bool
}

func (b *bearerServer) Next(response []byte) (challenge []byte, done bool, err error) {
	if b.failed {
		// The client's dummy response to the error challenge: XOAUTH2's is
		// empty, OAUTHBEARER's a single %x01 (RFC 7628 §3.2.3).
		return nil, true, smtp.ErrAuthFailed
	}
	if response == nil {
		return []byte{}, false, nil
	}
	user, token, ok := parseBearer(b.mech, response)
	if ok && b.s.srv.opts.OAuth2(user, token) {
		b.s.authUser, b.s.authMech = user, b.mech
		return nil, true, nil
	}
	b.failed = true
	status := "invalid_token"
	if b.mech == xoauth2 {
		status = "401" // Google's XOAUTH2 gives an HTTP status
	}
	blob, _ := json.Marshal(map[string]string{"status": status, "schemes": "Bearer", "scope": "https://mail.google.com/"})
	return blob, false, nil
}

// parseBearer reads the user and token of an XOAUTH2 response
// ("user=U^Aauth=Bearer T^A^A") or an OAUTHBEARER one
// ("n,a=U,^Ahost=…^Aauth=Bearer T^A^A").
func parseBearer(mech string, resp []byte) (user, token string, ok bool) {
	fields := resp
	if mech == sasl.OAuthBearer {
		parts := bytes.SplitN(resp, []byte{','}, 3)
		if len(parts) != 3 || string(parts[0]) != "n" {
			return "", "", false
		}
		if a, found := bytes.CutPrefix(parts[1], []byte("a=")); found {
			user = strings.NewReplacer("=2C", ",", "=3D", "=").Replace(string(a))
		}
		fields = parts[2]
	}
	for _, f := range bytes.Split(fields, []byte{1}) {
		k, v, _ := bytes.Cut(f, []byte{'='})
		switch string(k) {
		case "user":
			if mech == xoauth2 {
				user = string(v)
			}
		case "auth":
			t, found := strings.CutPrefix(string(v), "Bearer ")
			if !found {
				return "", "", false
			}
			token = t
		}
	}
	return user, token, user != "" && token != ""
}
