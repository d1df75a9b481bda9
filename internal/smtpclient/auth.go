package smtpclient

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"
)

// Credentials is a username and password from which a SASL client is
// chosen to fit what the server advertises.
type Credentials struct {
	Username, Password string
}

// Client picks a mechanism from offered (the AUTH keyword's parameters):
// PLAIN, then LOGIN, then CRAM-MD5. None fits → an error wrapping
// ErrNoAuthMechanism that names the offered mechanisms.
func (cr Credentials) Client(offered []string) (sasl.Client, error) {
	has := func(m string) bool {
		for _, o := range offered {
			if strings.EqualFold(o, m) {
				return true
			}
		}
		return false
	}
	switch {
	case has(sasl.Plain):
		return sasl.NewPlainClient("", cr.Username, cr.Password), nil
	case has(sasl.Login):
		return &loginClient{sasl.NewLoginClient(cr.Username, cr.Password), cr.Username}, nil
	case has("CRAM-MD5"):
		return NewCramMD5Client(cr.Username, cr.Password), nil
	}
	if len(offered) == 0 {
		return nil, fmt.Errorf("%w: the server advertises no AUTH mechanism", ErrNoAuthMechanism)
	}
	return nil, fmt.Errorf("%w: the server offers %s; supported are PLAIN, LOGIN, CRAM-MD5",
		ErrNoAuthMechanism, strings.Join(offered, " "))
}

// loginClient is go-sasl's LOGIN client (which sends the username as an
// initial response) made to also answer a "Username:" prompt, which
// servers that ignore the initial response send.
type loginClient struct {
	sasl.Client
	username string
}

func (l *loginClient) Next(challenge []byte) ([]byte, error) {
	if bytes.EqualFold(bytes.TrimSpace(challenge), []byte("Username:")) {
		return []byte(l.username), nil
	}
	return l.Client.Next(challenge)
}

// NewCramMD5Client returns a CRAM-MD5 (RFC 2195) SASL client, which go-sasl
// lacks. CRAM-MD5 keeps the password off the wire but needs the server to
// store it in clear; prefer PLAIN over TLS.
func NewCramMD5Client(username, secret string) sasl.Client {
	return &cramMD5{username, secret}
}

type cramMD5 struct{ username, secret string }

func (a *cramMD5) Start() (string, []byte, error) { return "CRAM-MD5", nil, nil }

func (a *cramMD5) Next(challenge []byte) ([]byte, error) {
	h := hmac.New(md5.New, []byte(a.secret))
	h.Write(challenge)
	resp := make([]byte, 0, len(a.username)+1+2*md5.Size)
	resp = append(resp, a.username...)
	resp = append(resp, ' ')
	return hex.AppendEncode(resp, h.Sum(nil)), nil
}

// maxAuthSteps bounds the challenge/response rounds of one AUTH exchange.
const maxAuthSteps = 8

// authenticate runs AUTH when credentials are configured. It refuses,
// before writing anything, when the session is not encrypted unless
// AllowInsecureAuth is set and the peer is loopback.
func (c *Conn) authenticate(cfg *Config) error {
	client := cfg.Auth
	if client == nil && cfg.AuthFor == nil && cfg.Username == "" && cfg.Password == "" {
		return nil
	}
	if !c.isTLS && !(cfg.AllowInsecureAuth && c.peerLoopback()) {
		c.quitQuietly()
		return c.localError("AUTH", false, ErrAuthRefusedInsecure, "the session is not encrypted")
	}
	param, advertised := c.ext["AUTH"]
	if !advertised {
		c.quitQuietly()
		return c.localError("AUTH", false, ErrNoAuthMechanism, "the server advertises no AUTH")
	}
	switch {
	case client == nil && cfg.AuthFor != nil:
		var err error
		if client, err = cfg.AuthFor(c.isTLS, strings.Fields(param)); err != nil || client == nil {
			if err == nil {
				err = errors.New("AuthFor returned no SASL client")
			}
			c.quitQuietly()
			return &Error{Command: "AUTH", Host: c.host, Err: joinErrs([]error{ErrAuthFailed, err})}
		}
	case client == nil:
		var err error
		client, err = Credentials{cfg.Username, cfg.Password}.Client(strings.Fields(param))
		if err != nil {
			c.quitQuietly()
			return &Error{Command: "AUTH", Host: c.host, Err: err}
		}
	}
	mech, ir, err := client.Start()
	if err != nil {
		return &Error{Command: "AUTH", Host: c.host, Err: err}
	}
	line := "AUTH " + mech
	if ir != nil {
		line += " " + encodeSASL(ir)
	}
	for step := 0; ; step++ {
		rep, err := c.cmd("AUTH", c.to.Command, line)
		if err != nil {
			return err
		}
		switch {
		case rep.Code == 235:
			return nil
		case rep.Code == 334 && step < maxAuthSteps:
			challenge, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(rep.Message))
			if derr != nil {
				return c.cancelAuth(protocolErrorf("AUTH challenge is not base64: %v", derr))
			}
			resp, nerr := client.Next(challenge)
			if nerr != nil {
				return c.cancelAuth(nerr)
			}
			// An empty response is an empty line (RFC 4954 §4: "=" is
			// only for an empty initial response); XOAUTH2 answers an
			// error challenge so.
			line = base64.StdEncoding.EncodeToString(resp)
		case rep.Code == 334:
			return c.cancelAuth(protocolErrorf("more than %d AUTH rounds", maxAuthSteps))
		default:
			if rep.Code < 400 {
				return c.unexpected("AUTH", rep, nil)
			}
			var sentinel error
			switch rep.Code {
			case 454, 530, 534, 535, 538:
				sentinel = ErrAuthFailed
			}
			if f, ok := client.(AuthFailure); ok {
				if why := f.AuthFailure(); why != nil {
					// What the server said in its error challenge (an
					// OAuth 2.0 status and scope) beats a bare 535.
					sentinel = joinErrs([]error{nonNil(sentinel, ErrAuthFailed), why})
				}
			}
			return c.replyError("AUTH", rep, sentinel)
		}
	}
}

// AuthFailure is implemented by SASL clients that learn why they were
// refused before the server's final reply: XOAUTH2 and OAUTHBEARER get a
// JSON error in a 334 challenge, answer it with a dummy response, and only
// then receive the 5xx. The error it returns is joined to the AUTH
// failure.
type AuthFailure interface {
	AuthFailure() error
}

func nonNil(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// cancelAuth ends an exchange the client cannot continue with "*"
// (RFC 4954 §4) and reports cause.
func (c *Conn) cancelAuth(cause error) error {
	rep, err := c.cmd("AUTH", c.to.Command, "*")
	if err != nil {
		return err
	}
	e := &Error{Command: "AUTH", Host: c.host, Code: rep.Code, Enhanced: rep.Enhanced, Message: rep.Message,
		Err: joinErrs([]error{ErrAuthFailed, cause})}
	if errors.Is(cause, ErrProtocol) {
		c.usable = false
	}
	return e
}

func encodeSASL(b []byte) string {
	if len(b) == 0 {
		return "="
	}
	return base64.StdEncoding.EncodeToString(b)
}
