package smtptest

import (
	"crypto/tls"
	"errors"
	"io"
	"time"

	"github.com/emersion/go-smtp"
)

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	err8BitMIME     = &smtp.SMTPError{Code: 555, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "BODY=8BITMIME not supported"}
	errShutdown     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Server shutting down"}
	errTLSRequired  = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
)

// session is one go-smtp session: it lasts from EHLO to the end of the
// connection, or to STARTTLS, after which go-smtp starts a new one.
type session struct {
	srv      *Server
	c        *smtp.Conn
	conn     int
	authUser string
	authMech string

	from     string
	mailOpts *smtp.MailOptions
	rcpts    []string
	rcptOpts []*smtp.RcptOptions
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sess := &session{srv: s, c: c}
	if rc, ok := nc.(*conn); ok {
		sess.conn = rc.index
	}
	return sess, nil
}

// delay waits Options.ReplyDelay, or until the server closes.
func (s *session) delay() {
	if d := s.srv.opts.ReplyDelay; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.srv.stop:
		}
	}
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	o := s.srv.opts
	s.delay()
	if _, isTLS := s.c.TLSConnectionState(); o.RequireTLS && !isTLS {
		return errTLSRequired
	}
	if (len(o.Auth) > 0 || o.OAuth2 != nil) && !o.AuthOptional && s.authUser == "" {
		return errAuthRequired
	}
	if o.Disable8BitMIME && opts.Body == smtp.Body8BitMIME {
		return err8BitMIME
	}
	if o.MailPolicy != nil {
		if reply := o.MailPolicy(from); reply != nil {
			return reply
		}
	}
	s.from, s.mailOpts = from, opts
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.delay()
	if policy := s.srv.opts.RcptPolicy; policy != nil {
		if reply := policy(to); reply != nil {
			return reply
		}
	}
	s.rcpts = append(s.rcpts, to)
	s.rcptOpts = append(s.rcptOpts, opts)
	return nil
}

func (s *session) Data(r io.Reader) error {
	o := s.srv.opts
	if o.StallDuringData {
		// Not reading is the whole point: the client's writes block once
		// the socket buffers are full.
		<-s.srv.stop
		return errShutdown
	}
	data, err := io.ReadAll(r)
	s.delay()
	_, isTLS := s.c.TLSConnectionState()
	m := &Message{
		From:          s.from,
		Rcpts:         s.rcpts,
		MailOpts:      s.mailOpts,
		RcptOpts:      s.rcptOpts,
		Data:          data,
		Helo:          s.c.Hostname(),
		TLS:           isTLS,
		AuthUser:      s.authUser,
		AuthMechanism: s.authMech,
		Conn:          s.conn,
	}
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge):
		m.Code = smtp.ErrDataTooLarge.Code
		s.srv.record(m)
		return err
	case err != nil:
		return err // the connection failed: nothing arrived
	case o.CloseAfterDot:
		s.srv.record(m)
		s.c.Conn().Close()
		return nil
	}
	var reply *smtp.SMTPError
	if o.DataPolicy != nil {
		reply = o.DataPolicy(m.clone())
	}
	if reply != nil {
		m.Code = reply.Code
		s.srv.record(m)
		return reply
	}
	m.Code = 250
	s.srv.record(m)
	return nil
}

func (s *session) Reset() {
	s.from, s.mailOpts, s.rcpts, s.rcptOpts = "", nil, nil, nil
}

func (s *session) Logout() error { return nil }
