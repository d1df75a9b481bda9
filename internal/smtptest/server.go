package smtptest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Options configures a [Server]. The zero value is a plain, permissive
// receiving MX on 127.0.0.1: no TLS, no AUTH, no limits.
type Options struct {
	// Network and Listen are passed to net.Listen; the defaults are "tcp"
	// and "127.0.0.1:0". Use "[::1]:0" for IPv6.
	Network, Listen string

	// Domain is the server's host name in its greeting; default "mx.test".
	Domain string

	// TLS, when non-nil, makes the server offer STARTTLS with this
	// configuration (or, with ImplicitTLS, speak TLS from the first byte).
	TLS *tls.Config
	// ImplicitTLS wraps every connection in TLS before the greeting, like
	// port 465. It requires TLS.
	ImplicitTLS bool

	// Auth maps user names to passwords. When non-empty the server offers
	// AUTH PLAIN and LOGIN (under TLS only, unless AllowInsecureAuth),
	// answers a wrong password with 535 5.7.8, and refuses MAIL from a client
	// that has not authenticated with 530 5.7.0, like a submission server.
	Auth map[string]string
	// OAuth2, when set, makes the server offer AUTH XOAUTH2 and
	// OAUTHBEARER (RFC 7628) and accept a bearer token when it returns
	// true for the user and token the client sent. A refused token gets
	// the JSON error challenge Gmail and Microsoft 365 send, then 535
	// 5.7.8. Like Auth, it makes AUTH required for MAIL.
	OAuth2 func(user, token string) bool
	// OAuth2Mechanisms limits the mechanisms OAuth2 offers, e.g.
	// []string{"XOAUTH2"} as Microsoft 365 does; nil offers both.
	OAuth2Mechanisms []string
	// RequireTLS refuses MAIL on a connection that has not done STARTTLS
	// with 530 5.7.0, as receivers that insist on encryption do.
	RequireTLS bool
	// ReplyDelay is how long the server waits before answering MAIL, each
	// RCPT and the end of data: a slow server.
	ReplyDelay time.Duration
	// AuthOptional accepts mail from clients that did not authenticate even
	// though Auth is set.
	AuthOptional bool
	// AllowInsecureAuth offers and accepts AUTH on plaintext connections,
	// to prove that a client refuses to send credentials there.
	AllowInsecureAuth bool

	// MaxRecipients, when positive, answers further RCPT commands in a
	// transaction with 452 4.5.3 once that many were accepted.
	MaxRecipients int
	// MaxMessageBytes, when positive, is advertised as SIZE; a larger
	// MAIL FROM SIZE= is refused with 552 at MAIL, and a larger body with
	// 552 after the final dot.
	MaxMessageBytes int64

	// EnableSMTPUTF8 advertises SMTPUTF8 and accepts MAIL FROM SMTPUTF8;
	// without it that parameter gets 504.
	EnableSMTPUTF8 bool
	// EnableREQUIRETLS advertises REQUIRETLS (RFC 8689); go-smtp accepts
	// the MAIL parameter only over TLS. Message.MailOpts.RequireTLS says
	// whether it was given.
	EnableREQUIRETLS bool
	// DisablePipelining and Disable8BitMIME remove PIPELINING and 8BITMIME
	// from the EHLO reply, which go-smtp always advertises; with
	// Disable8BitMIME, MAIL FROM BODY=8BITMIME is refused with 555 5.5.4.
	// The keywords are removed from plaintext replies only (after TLS the
	// server's writes cannot be seen), so Start fails the test if either is
	// combined with TLS. The server still reads pipelined commands.
	DisablePipelining, Disable8BitMIME bool

	// Greeting421 answers every connection with "421 4.3.2 busy" instead of
	// a greeting, then closes it.
	Greeting421 bool
	// GreetingPolicy, when set, is asked about each connection by its
	// 1-based index; a non-nil reply is sent instead of the greeting and the
	// connection closed (e.g. busy for the first connection only). It takes
	// precedence over Greeting421.
	GreetingPolicy func(conn int) *smtp.SMTPError
	// MailPolicy, when set, is asked about each MAIL FROM; a non-nil reply
	// refuses it.
	MailPolicy func(from string) *smtp.SMTPError
	// RcptPolicy, when set, is asked about each RCPT TO; a non-nil reply
	// refuses that recipient.
	RcptPolicy func(rcpt string) *smtp.SMTPError
	// DataPolicy, when set, is asked about each complete message; a non-nil
	// reply is sent after the final dot instead of 250.
	DataPolicy func(msg *Message) *smtp.SMTPError

	// StallDuringData makes the server stop reading once it has answered
	// DATA with 354, until the server is closed: the client's writes fill
	// the TCP buffers and then block, which is how write deadlines are
	// tested. Most of the buffering is the client's own send buffer, which
	// Linux autotunes up to net.ipv4.tcp_wmem's maximum (4 MiB by default;
	// the server side holds about 90 KiB), so a test must write more than
	// that (say 8 MiB) or dial with a small SO_SNDBUF (net.TCPConn's
	// SetWriteBuffer: 4 KiB blocks after about 90 KiB).
	StallDuringData bool
	// CloseAfterDot reads the whole body and then closes the connection
	// without a reply. The message is recorded with Code 0.
	CloseAfterDot bool
	// BrokenTLS advertises STARTTLS and answers it with 220, then answers
	// the client's ClientHello with bytes that are not TLS and hangs up, so
	// the client's handshake fails. With ImplicitTLS the same happens on
	// connect. TLS need not be set.
	BrokenTLS bool

	// ReadTimeout and WriteTimeout bound each read and write of a session
	// (go-smtp's timeouts); zero means none. Closing the server ends every
	// session regardless.
	ReadTimeout, WriteTimeout time.Duration
}

// Server is a running test SMTP server. Its methods are safe for concurrent
// use.
type Server struct {
	// Addr is the address the server listens on, e.g. "127.0.0.1:40123".
	Addr string

	opts      Options
	tlsConfig *tls.Config
	smtp      *smtp.Server
	ln        net.Listener
	stop      chan struct{} // closed by Close: releases StallDuringData
	served    chan struct{} // closed when go-smtp's Serve has returned
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu       sync.Mutex
	conns    []*conn    // every connection accepted, in order
	attempts []*Message // every transaction that reached the final dot
	changed  chan struct{}
	closed   bool // no more logging to the test
	log      testing.TB
}

// Start starts a server on loopback and stops it when the test ends. It fails
// the test if opts are inconsistent or the server cannot listen.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := newServer(t, opts)
	if err != nil {
		t.Fatalf("smtptest: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		if s.closeErr != nil {
			t.Errorf("smtptest: %v", s.closeErr)
		}
	})
	return s
}

// Serve starts a server on loopback for a program that is not a test (the
// runnable examples): nothing is logged and the caller must Close it.
func Serve(opts Options) (*Server, error) {
	return newServer(nil, opts)
}

func newServer(t testing.TB, opts Options) (*Server, error) {
	if opts.Network == "" {
		opts.Network = "tcp"
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.Domain == "" {
		opts.Domain = "mx.test"
	}
	tlsConfig := opts.TLS
	if opts.BrokenTLS && tlsConfig == nil {
		// go-smtp offers STARTTLS only with a configuration; the broken
		// handshake never reaches it.
		tlsConfig = &tls.Config{}
	}
	if opts.ImplicitTLS && tlsConfig == nil {
		return nil, errors.New("ImplicitTLS needs Options.TLS")
	}
	if (opts.DisablePipelining || opts.Disable8BitMIME) && tlsConfig != nil {
		return nil, errors.New("DisablePipelining and Disable8BitMIME work on plaintext sessions only")
	}

	ln, err := net.Listen(opts.Network, opts.Listen)
	if err != nil {
		return nil, err
	}
	s := &Server{
		Addr:      ln.Addr().String(),
		opts:      opts,
		tlsConfig: tlsConfig,
		stop:      make(chan struct{}),
		served:    make(chan struct{}),
		changed:   make(chan struct{}),
		log:       t,
	}
	s.ln = &listener{Listener: ln, srv: s}

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = opts.Domain
	srv.MaxRecipients = opts.MaxRecipients
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.AllowInsecureAuth = opts.AllowInsecureAuth
	srv.EnableSMTPUTF8 = opts.EnableSMTPUTF8
	srv.EnableREQUIRETLS = opts.EnableREQUIRETLS
	srv.ReadTimeout = opts.ReadTimeout
	srv.WriteTimeout = opts.WriteTimeout
	srv.ErrorLog = logger{s}
	if !opts.ImplicitTLS {
		// With implicit TLS the listener wraps connections itself, so that
		// it can count and record them first; go-smtp must then not offer
		// STARTTLS on top.
		srv.TLSConfig = tlsConfig
	}
	s.smtp = srv

	go func() {
		defer close(s.served)
		srv.Serve(s.ln) // returns when Close closes the listener
	}()
	return s, nil
}

// Host returns the host part of Addr, e.g. "127.0.0.1" or "::1".
func (s *Server) Host() string {
	host, _, _ := net.SplitHostPort(s.Addr)
	return host
}

// Port returns the port the server listens on, for code that takes the MX
// host and the port separately.
func (s *Server) Port() int {
	_, port, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(port)
	return n
}

// Messages returns copies of the messages the server accepted (answered 250
// after the final dot), in arrival order.
func (s *Server) Messages() []*Message {
	return s.messages(true)
}

// Attempts returns copies of every transaction that reached the end of DATA,
// including those refused by DataPolicy or MaxMessageBytes and those dropped
// by CloseAfterDot; [Message.Code] tells them apart.
func (s *Server) Attempts() []*Message {
	return s.messages(false)
}

func (s *Server) messages(acceptedOnly bool) []*Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Message
	for _, m := range s.attempts {
		if !acceptedOnly || m.Code == 250 {
			out = append(out, m.clone())
		}
	}
	return out
}

// WaitMessages waits until at least n messages have been accepted and returns
// them all, as Messages does. It fails the test if they have not arrived
// within timeout, reporting what did.
func (s *Server) WaitMessages(t testing.TB, n int, timeout time.Duration) []*Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if msgs := s.Messages(); len(msgs) >= n {
			return msgs
		}
		select {
		case <-changed:
		case <-deadline.C:
			msgs := s.Messages()
			t.Fatalf("smtptest: %d message(s) accepted after %v, want %d (%d transaction(s) in all, %d connection(s))",
				len(msgs), timeout, n, len(s.Attempts()), s.Connections())
			return msgs
		}
	}
}

// record stores a finished transaction and wakes WaitMessages.
func (s *Server) record(m *Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts = append(s.attempts, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

// Connections returns how many connections the server has accepted,
// counted at the listener: refused and failed ones included.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Transcript returns the bytes the server received in plaintext, on all
// connections, one connection after another in accept order. Once a
// connection switches to TLS nothing more of it is recorded (the bytes would
// be ciphertext), so implicit-TLS connections contribute nothing: what is
// here is exactly what an eavesdropper could read, which is what tests of
// "no AUTH before STARTTLS" must check. Bytes a client pipelined after
// STARTTLS, before the handshake, are included.
func (s *Server) Transcript() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []byte
	for _, c := range s.conns {
		out = append(out, c.transcript...)
	}
	return out
}

// ConnTranscript is Transcript for the connection with the 1-based index
// conn alone; nil if there is no such connection.
func (s *Server) ConnTranscript(conn int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if conn < 1 || conn > len(s.conns) {
		return nil
	}
	return append([]byte(nil), s.conns[conn-1].transcript...)
}

// closeTimeout bounds how long Close waits for the server's goroutines; they
// end within milliseconds once their connections are closed, so reaching it
// means a goroutine leak.
const closeTimeout = 10 * time.Second

// Close stops the server: it closes the listener and every connection,
// releases StallDuringData, and waits for all the server's goroutines to end.
// It is called when the test ends; calling it earlier, or twice, is fine.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.ln.Close()
		// Serve must have returned before Shutdown waits on go-smtp's
		// WaitGroup, or a last accepted connection could Add concurrently.
		<-s.served
		s.mu.Lock()
		conns := s.conns
		s.mu.Unlock()
		for _, c := range conns {
			c.Close() // unblocks any read, write or handshake on it
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := s.smtp.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = fmt.Errorf("sessions still running %v after Close: %w", closeTimeout, err)
		}
		s.wg.Wait()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
	})
}

// logger passes go-smtp's error log to the test's log until the server is
// closed; logging to a finished test panics.
type logger struct{ s *Server }

func (l logger) Printf(format string, v ...any) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if !l.s.closed && l.s.log != nil {
		l.s.log.Logf("smtptest: "+format, v...)
	}
}

func (l logger) Println(v ...any) {
	l.Printf("%s", fmt.Sprintln(v...))
}
