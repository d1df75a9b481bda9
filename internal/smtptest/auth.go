package smtptest

import (
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// AuthMechanisms offers PLAIN and LOGIN when Options.Auth has users. go-smtp
// asks only when AUTH is allowed (TLS, or AllowInsecureAuth).
func (s *session) AuthMechanisms() []string {
	var mechs []string
	if len(s.srv.opts.Auth) > 0 {
		mechs = append(mechs, sasl.Plain, sasl.Login)
	}
	if s.srv.opts.OAuth2 != nil {
		mechs = append(mechs, s.srv.oauth2Mechanisms()...)
	}
	return mechs
}

// Auth returns the SASL server for mech.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.srv.opts.OAuth2 != nil {
		for _, m := range s.srv.oauth2Mechanisms() {
			if m == mech {
				return &bearerServer{mech: mech, s: s}, nil
			}
		}
	}
	if len(s.srv.opts.Auth) == 0 {
		return nil, smtp.ErrAuthUnsupported
	}
	switch mech {
	case sasl.Plain:
		s.authMech = mech
		return sasl.NewPlainServer(s.login), nil
	case sasl.Login:
		s.authMech = mech
		return &loginServer{authenticate: func(user, pass string) error { return s.login("", user, pass) }}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// login checks credentials against Options.Auth. The error is an
// *smtp.SMTPError so that go-smtp sends it as is: 535 5.7.8.
func (s *session) login(identity, user, pass string) error {
	want, ok := s.srv.opts.Auth[user]
	if !ok || pass != want || identity != "" && identity != user {
		return smtp.ErrAuthFailed
	}
	s.authUser = user
	return nil
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login), which go-sasl implements only as a client:
// the server asks "Username:" and then "Password:". A client may send the
// user name as the initial response, skipping the first question.
type loginServer struct {
	authenticate func(user, pass string) error
	user         string
	state        int
}

const (
	loginStart = iota
	loginWantUser
	loginWantPass
	loginDone
)

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.state {
	case loginStart:
		if response == nil {
			l.state = loginWantUser
			return []byte("Username:"), false, nil
		}
		l.user, l.state = string(response), loginWantPass
		return []byte("Password:"), false, nil
	case loginWantUser:
		l.user, l.state = string(response), loginWantPass
		return []byte("Password:"), false, nil
	case loginWantPass:
		l.state = loginDone
		return nil, true, l.authenticate(l.user, string(response))
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}
