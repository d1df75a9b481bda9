//go:build linux

package smtpclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

// The end-of-transaction check (nothing may follow the final reply) costs
// no system call on a plaintext TCP session whose last read came back
// short, and looks at the socket everywhere else; the look before each
// transaction is always made. Counted exactly: looks per message.
func TestQuietLooksPerMessage(t *testing.T) {
	tlsSrv := smtptest.Start(t, smtptest.Options{TLS: &tls.Config{Certificates: []tls.Certificate{testpki.SelfSigned("mx.test")}}})
	sink := smtptest.StartSink(t, true)
	for _, tc := range []struct {
		name  string
		addr  string
		cfg   Config
		looks int
	}{
		// The look before the transaction; the final reply's read was short.
		{"plaintext TCP", sink, Config{TLS: TLSNone}, 1},
		// A TLS read says nothing about what is queued behind its record.
		{"TLS", tlsSrv.Addr, Config{TLS: TLSOpportunistic}, 2},
		// Not a *net.TCPConn: no claim about the socket from a short read.
		{"wrapped connection", sink, Config{TLS: TLSNone, Dialer: wrapDialer{}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.LocalName = "client.test"
			c, err := Dial(testCtx(t), tc.addr, "mx.test", &tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// TCP, plaintext or under TLS, is read and written with raw
			// system calls (rawio_linux.go); the tests of deadlines,
			// aborts and lost connections run through that path.
			if raw := c.rio.rc != nil; raw != (tc.name != "wrapped connection") {
				t.Errorf("raw system calls: %v", raw)
			}
			body := []byte("Subject: x\r\n\r\nhello\r\n")
			send := func() {
				tx := &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: bytes.NewReader(body), Size: int64(len(body))}
				res, err := c.Send(testCtx(t), tx)
				if err != nil || res.Rcpts[0].Err != nil {
					t.Fatal(err, res.Rcpts[0].Err)
				}
			}
			send()
			before := c.peek.looks
			const n = 5
			for range n {
				send()
			}
			if got := c.peek.looks - before; got != n*tc.looks {
				t.Errorf("%d looks at the socket for %d messages, want %d each", got, n, tc.looks)
			}
		})
	}
}

// wrapDialer hands out TCP connections behind another type, which can
// still be looked at (syscall.Conn).
type wrapDialer struct{}

func (wrapDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return wrappedConn{nc}, nil
}

type wrappedConn struct{ net.Conn }

func (w wrappedConn) SyscallConn() (syscall.RawConn, error) {
	return w.Conn.(syscall.Conn).SyscallConn()
}

// The raw reads and writes fail as net.Conn's would: a passed deadline is
// os.ErrDeadlineExceeded in a *net.OpError named "read", and a peer that
// closed gives io.EOF.
func TestRawIOErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			accepted <- nc
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	c := newConn(nc, "mx.test", Timeouts{}.withDefaults())
	defer c.Close()
	if c.rio.rc == nil {
		t.Fatal("no raw I/O on a TCP connection")
	}
	buf := make([]byte, 16)
	nc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err = c.rawRead(buf)
	var oe *net.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("read past its deadline: %v", err)
	}
	nc.SetReadDeadline(time.Time{})
	if n, err := c.rawWrite([]byte("hello")); n != 5 || err != nil {
		t.Errorf("write: %d, %v", n, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(srv, got); err != nil || string(got) != "hello" {
		t.Errorf("the peer read %q, %v", got, err)
	}
	srv.Write([]byte("ok"))
	srv.Close()
	if n, err := c.rawRead(buf); n != 2 || err != nil || string(buf[:2]) != "ok" {
		t.Errorf("read: %d %q, %v", n, buf[:n], err)
	}
	if _, err := c.rawRead(buf); err != io.EOF {
		t.Errorf("read after the peer closed: %v, want io.EOF", err)
	}
}
