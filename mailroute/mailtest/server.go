package mailtest

import (
	"crypto/tls"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// Options configure a Server. The zero value is a permissive receiving MX
// on 127.0.0.1 with a port of its own: no TLS, no AUTH, no limits.
type Options struct {
	// Addr is the address to listen on. "": 127.0.0.1 on a free port.
	// An MX beside another one listens on another loopback address on the
	// same port, e.g. "127.0.0.2:" + strconv.Itoa(first.Port()).
	Addr string
	// Hostname is the server's name in its greeting. "": "mx.test".
	Hostname string
	// TLS, when set, makes the server offer STARTTLS with this
	// configuration (CA.ServerConfig gives one).
	TLS *tls.Config
	// RequireTLS refuses MAIL before STARTTLS with 530 5.7.0.
	RequireTLS bool
	// Users, when set, makes the server a submission relay: it offers
	// AUTH PLAIN and LOGIN, accepts these user names and passwords,
	// answers others with 535 5.7.8, and refuses MAIL from a client that
	// has not authenticated with 530 5.7.0. Without TLS, AUTH is offered
	// in plaintext (a Relay then needs InsecurePlaintextLoopback).
	Users map[string]string
	// Refuse, when set, is asked about each recipient; a non-nil Reply
	// refuses it with that reply (a 4xx defers it, a 5xx fails it).
	Refuse func(rcpt string) *Reply
	// Greylist defers the first attempt for each recipient with
	// 450 4.2.0 and accepts later ones, as greylisting receivers do.
	Greylist bool
	// Delay is how long the server waits before answering MAIL, each RCPT
	// and the end of the message: a slow server.
	Delay time.Duration
}

// Reply is an SMTP reply a Server gives instead of accepting.
type Reply struct {
	Code     int    // e.g. 550
	Enhanced [3]int // RFC 3463 code, e.g. {5, 7, 1}; zero: none
	Message  string // e.g. "Service unavailable; client host blocked"
}

// Message is what a Server received in one accepted transaction.
type Message struct {
	// From is the envelope sender ("" for the null sender).
	From string
	// Rcpts are the envelope recipients the server accepted.
	Rcpts []string
	// Data is the message, byte for byte as it arrived (CRLF line ends,
	// dot-stuffing removed).
	Data []byte
	// Helo is the name the client gave in EHLO.
	Helo string
	// TLS reports whether the transaction ran over TLS.
	TLS bool
	// AuthUser is the user the client authenticated as; "" if none.
	AuthUser string
}

// Server is a running SMTP receiver that records what it accepts. Its
// methods are safe for concurrent use.
type Server struct {
	// Addr is the "host:port" it listens on.
	Addr string

	s *smtptest.Server

	mu   sync.Mutex
	seen map[string]bool // greylisting: recipients tried once
}

// NewServer starts a Server. Close it when done.
func NewServer(opts Options) (*Server, error) {
	srv := &Server{seen: make(map[string]bool)}
	o := smtptest.Options{
		Listen:            opts.Addr,
		Domain:            opts.Hostname,
		TLS:               opts.TLS,
		RequireTLS:        opts.RequireTLS,
		Auth:              opts.Users,
		AllowInsecureAuth: opts.TLS == nil && len(opts.Users) > 0,
		ReplyDelay:        opts.Delay,
	}
	if opts.Refuse != nil || opts.Greylist {
		o.RcptPolicy = func(rcpt string) *smtp.SMTPError {
			if opts.Refuse != nil {
				if r := opts.Refuse(rcpt); r != nil {
					return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Message}
				}
			}
			if opts.Greylist && srv.firstTry(rcpt) {
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Greylisted, please try again later"}
			}
			return nil
		}
	}
	s, err := smtptest.Serve(o)
	if err != nil {
		return nil, err
	}
	srv.s, srv.Addr = s, s.Addr
	return srv, nil
}

// firstTry reports whether rcpt is tried for the first time, and
// remembers it.
func (s *Server) firstTry(rcpt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[rcpt] {
		return false
	}
	s.seen[rcpt] = true
	return true
}

// Port returns the port the server listens on, for DirectOptions.Port and
// for further MX hosts on other loopback addresses.
func (s *Server) Port() int { return s.s.Port() }

// AddrOn returns the address on ip with this server's port, for the
// Options.Addr of a further MX host: s.AddrOn("127.0.0.2").
func (s *Server) AddrOn(ip string) string { return net.JoinHostPort(ip, strconv.Itoa(s.s.Port())) }

// Messages returns the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	var out []Message
	for _, m := range s.s.Messages() {
		out = append(out, Message{From: m.From, Rcpts: m.Rcpts, Data: m.Data, Helo: m.Helo, TLS: m.TLS, AuthUser: m.AuthUser})
	}
	return out
}

// Connections returns how many connections the server has accepted.
func (s *Server) Connections() int { return s.s.Connections() }

// Close stops the server and ends its sessions.
func (s *Server) Close() { s.s.Close() }
