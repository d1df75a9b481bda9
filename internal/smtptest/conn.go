package smtptest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// listener counts and records every connection before go-smtp sees it, and
// handles the connections that must not reach go-smtp at all (a refused
// greeting, a broken implicit-TLS handshake).
type listener struct {
	net.Listener
	srv *Server
}

func (l *listener) Accept() (net.Conn, error) {
	s := l.srv
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		c := &conn{Conn: nc, srv: s, index: len(s.conns) + 1, encrypted: s.opts.ImplicitTLS, done: make(chan struct{})}
		s.conns = append(s.conns, c)
		s.mu.Unlock()

		var reply *smtp.SMTPError
		if s.opts.GreetingPolicy != nil {
			reply = s.opts.GreetingPolicy(c.index)
		} else if s.opts.Greeting421 {
			reply = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "busy"}
		}
		switch {
		case s.opts.ImplicitTLS && s.opts.BrokenTLS:
			s.wg.Go(func() {
				defer c.Close()
				c.Read(make([]byte, 512)) // the ClientHello: answered with garbage
			})
		case reply != nil:
			s.wg.Go(func() { s.refuse(c, reply) })
		case s.opts.ImplicitTLS:
			return tls.Server(c, s.tlsConfig), nil
		default:
			return c, nil
		}
	}
}

// refuse answers c with reply instead of a greeting and closes it, the way a
// busy MTA does.
func (s *Server) refuse(c *conn, reply *smtp.SMTPError) {
	var w net.Conn = c
	if s.opts.ImplicitTLS {
		w = tls.Server(c, s.tlsConfig)
	}
	defer w.Close()
	w.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(w, formatReply(reply)); err != nil {
		return
	}
	if tc, ok := w.(*tls.Conn); ok {
		tc.CloseWrite() // close_notify, so the client sees a clean end of TLS
	}
	hangUp(c)
}

// formatReply renders reply as a one-line SMTP reply, adding the enhanced code
// X.0.0 when it is unset, as go-smtp does for its own replies.
func formatReply(reply *smtp.SMTPError) string {
	enh := reply.EnhancedCode
	if enh == smtp.EnhancedCodeNotSet {
		if cat := reply.Code / 100; cat == 2 || cat == 4 || cat == 5 {
			enh = smtp.EnhancedCode{cat, 0, 0}
		}
	}
	if enh == smtp.EnhancedCodeNotSet || enh == smtp.NoEnhancedCode {
		return fmt.Sprintf("%03d %s\r\n", reply.Code, reply.Message)
	}
	return fmt.Sprintf("%03d %d.%d.%d %s\r\n", reply.Code, enh[0], enh[1], enh[2], reply.Message)
}

// hangUp ends a connection after a last reply so that the client reads the
// reply rather than a reset: closing a socket with unread input makes the
// kernel send RST, which can overtake data still in flight. So it half-closes
// and reads until the client hangs up too (or a second passes).
func hangUp(c *conn) {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.Conn.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, c.Conn)
	c.Close()
}

// conn is a server-side connection that records what it reads while the
// connection is in plaintext, and implements the misbehaviours that need the
// raw socket.
//
// go-smtp reads and writes a connection from one goroutine, but Close (and a
// TLS close_notify written by it) comes from others, so the state below is
// guarded by srv.mu.
type conn struct {
	net.Conn
	srv   *Server
	index int

	transcript []byte
	// encrypted: the connection has switched to TLS and reads are no longer
	// recorded.
	encrypted bool
	// greeted: the 220 greeting has been written; a later 220 can only be
	// the answer to STARTTLS.
	greeted bool
	// breakTLS: BrokenTLS is on and the client was told to start TLS; its
	// ClientHello gets garbage back.
	breakTLS bool
	// expired: TimeOutSessions ended the session; every read times out.
	expired bool

	done      chan struct{} // closed by the first Close
	closeOnce sync.Once
}

// errBrokenTLS ends the server side of a BrokenTLS handshake.
var errBrokenTLS = errors.New("smtptest: BrokenTLS: handshake sabotaged")

func (c *conn) Read(b []byte) (int, error) {
	s := c.srv
	s.mu.Lock()
	expired := c.expired
	s.mu.Unlock()
	if expired {
		// Checked here as well as by the deadline TimeOutSessions sets:
		// go-smtp's own ReadTimeout moves the deadline before each read.
		return 0, os.ErrDeadlineExceeded
	}
	n, err := c.Conn.Read(b)
	s.mu.Lock()
	if !c.encrypted {
		c.transcript = append(c.transcript, b[:n]...)
	}
	sabotage := n > 0 && (c.breakTLS || s.opts.ImplicitTLS && s.opts.BrokenTLS)
	s.mu.Unlock()
	if sabotage {
		c.Conn.Write([]byte("this is not TLS\r\n"))
		hangUp(c)
		return 0, errBrokenTLS
	}
	return n, err
}

// The EHLO reply lines dropped by DisablePipelining and Disable8BitMIME.
// go-smtp writes and flushes each reply line separately, and these keywords
// are never the first or the last line of its EHLO reply.
var (
	pipeliningLine = []byte("250-PIPELINING\r\n")
	eightBitLine   = []byte("250-8BITMIME\r\n")
)

func (c *conn) Write(b []byte) (int, error) {
	s := c.srv
	s.mu.Lock()
	plain := !c.encrypted
	startTLS := false
	if plain && bytes.HasPrefix(b, []byte("220 ")) {
		startTLS = c.greeted
		c.greeted = true
	}
	s.mu.Unlock()
	if plain && (s.opts.DisablePipelining && bytes.EqualFold(b, pipeliningLine) ||
		s.opts.Disable8BitMIME && bytes.EqualFold(b, eightBitLine)) {
		return len(b), nil
	}
	n, err := c.Conn.Write(b)
	if startTLS {
		// Everything read so far was plaintext; the client sends its
		// ClientHello only after reading this reply.
		s.mu.Lock()
		c.encrypted = true
		c.breakTLS = s.opts.BrokenTLS
		s.mu.Unlock()
	}
	return n, err
}

// Close closes the connection and marks it closed for TimeOutSessions.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { close(c.done) })
	return err
}
