package smtpclient

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// scripted runs a hand-written SMTP peer on loopback for what go-smtp's
// server cannot be made to do (a multi-line greeting, malformed replies, no
// EHLO, replies withheld to prove pipelining, stalls). handle runs once per
// connection; the connection is closed when it returns. The server stops
// when the test ends, and done is closed first so handlers blocked on it
// return.
func scripted(t *testing.T, handle func(p *peer)) (addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(20 * time.Second))
				handle(&peer{t: t, nc: nc, r: bufio.NewReader(nc), done: done})
			})
		}
	})
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// peer is the server side of one scripted connection.
type peer struct {
	t    *testing.T
	nc   net.Conn
	r    *bufio.Reader
	done chan struct{}
}

// send writes raw text (lines must carry their own CRLF).
func (p *peer) send(s string) {
	if _, err := p.nc.Write([]byte(s)); err != nil {
		p.t.Logf("scripted peer: write: %v", err)
	}
}

// line reads one command line without its CRLF ("" on error).
func (p *peer) line() string {
	l, err := p.r.ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimRight(l, "\r\n")
}

// expect reads a line and reports a test error unless it starts with prefix.
func (p *peer) expect(prefix string) string {
	l := p.line()
	if !strings.HasPrefix(strings.ToUpper(l), strings.ToUpper(prefix)) {
		p.t.Errorf("scripted peer: got %q, want %q...", l, prefix)
	}
	return l
}

// exact reads a line and reports a test error unless it is want.
func (p *peer) exact(want string) {
	if l := p.line(); l != want {
		p.t.Errorf("scripted peer: got %q, want %q", l, want)
	}
}

// greet sends a plain greeting and answers EHLO with exts (no PIPELINING
// unless listed).
func (p *peer) greet(exts ...string) {
	p.send("220 scripted.test ESMTP\r\n")
	p.expect("EHLO ")
	if len(exts) == 0 {
		p.send("250 scripted.test\r\n")
		return
	}
	p.send("250-scripted.test\r\n")
	for i, e := range exts {
		sep := "-"
		if i == len(exts)-1 {
			sep = " "
		}
		p.send("250" + sep + e + "\r\n")
	}
}

// readData reads a DATA body up to the terminating dot, unstuffed.
func (p *peer) readData() string {
	var b strings.Builder
	for {
		l, err := p.r.ReadString('\n')
		if err != nil || l == ".\r\n" {
			return b.String()
		}
		b.WriteString(strings.TrimPrefix(l, "."))
	}
}

// wait blocks until the test ends.
func (p *peer) wait() { <-p.done }

// testCtx returns a context that ends with a generous bound, so a bug
// cannot hang the test binary.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// asError asserts err is an *Error and returns it.
func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	return e
}
