package smtptest

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/testpki"
)

func TestGreeting421(t *testing.T) {
	s := Start(t, Options{Greeting421: true})
	for range 2 {
		conn, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(conn)
		conn.Close()
		if err != nil || string(b) != "421 4.3.2 busy\r\n" {
			t.Fatalf("read %q, %v; want the busy reply, then EOF", b, err)
		}
	}
	// go-smtp's client sees the reply as an SMTP error.
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	se := wantCode(t, c.Hello("client.test"), 421)
	if se.EnhancedCode != (smtp.EnhancedCode{4, 3, 2}) {
		t.Errorf("enhanced code %v", se.EnhancedCode)
	}
	if s.Connections() != 3 {
		t.Errorf("Connections = %d, want 3", s.Connections())
	}
}

func TestGreeting421UnderImplicitTLS(t *testing.T) {
	ca := testpki.New(t)
	s := Start(t, Options{TLS: ca.ServerConfig(), ImplicitTLS: true, Greeting421: true})
	conn, err := tls.Dial("tcp", s.Addr, ca.ClientConfig("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(conn); err != nil || string(b) != "421 4.3.2 busy\r\n" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestGreetingPolicy(t *testing.T) {
	s := Start(t, Options{GreetingPolicy: func(conn int) *smtp.SMTPError {
		switch conn {
		case 1:
			return &smtp.SMTPError{Code: 554, Message: "no SMTP service here"}
		case 2:
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.NoEnhancedCode, Message: "later"}
		}
		return nil
	}})
	for _, want := range []string{"554 5.0.0 no SMTP service here\r\n", "421 later\r\n"} {
		conn, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(conn)
		conn.Close()
		if string(b) != want {
			t.Errorf("got %q, want %q", b, want)
		}
	}
	if err := send(dial(t, s.Addr), "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitMessages(t, 1, 5*time.Second)[0]; m.Conn != 3 {
		t.Errorf("Conn = %d, want 3", m.Conn)
	}
}

func TestCloseAfterDot(t *testing.T) {
	s := Start(t, Options{CloseAfterDot: true})
	c := dial(t, s.Addr)
	err := send(c, "a@example.org", []string{"b@example.com"}, "the body\r\n")
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		t.Fatalf("err = %v, want a connection error and no reply", err)
	}
	if msgs := s.Messages(); len(msgs) != 0 {
		t.Errorf("Messages = %+v, want none accepted", msgs)
	}
	att := s.Attempts()
	if len(att) != 1 || att[0].Code != 0 || string(att[0].Data) != "the body\r\n" {
		t.Fatalf("Attempts = %+v", att)
	}
}

// TestStallDuringData checks that a client's write times out against a
// stalled server, and reports how much it managed to write first: with the
// kernel's default buffers, and with a small client send buffer.
func TestStallDuringData(t *testing.T) {
	for name, sndbuf := range map[string]int{"default buffers": 0, "4 KiB send buffer": 4096} {
		t.Run(name, func(t *testing.T) {
			s := Start(t, Options{StallDuringData: true})
			r := dialRaw(t, s.Addr)
			if sndbuf > 0 {
				r.conn.(*net.TCPConn).SetWriteBuffer(sndbuf)
			}
			r.cmd(250, "EHLO client.test")
			r.cmd(250, "MAIL FROM:<a@example.org>")
			r.cmd(250, "RCPT TO:<b@example.com>")
			r.cmd(354, "DATA")

			line := []byte(strings.Repeat("x", 1022) + "\r\n")
			r.conn.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			written := 0
			var err error
			for written < 64<<20 {
				var n int
				n, err = r.conn.Write(line)
				written += n
				if err != nil {
					break
				}
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("after %d bytes: err = %v, want the write deadline to expire", written, err)
			}
			t.Logf("the client wrote %d KiB before blocking", written>>10)

			start := time.Now()
			s.Close()
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Close took %v with a stalled session", d)
			}
			if len(s.Attempts()) != 0 {
				t.Errorf("a stalled message was recorded")
			}
		})
	}
}

func TestReadTimeout(t *testing.T) {
	s := Start(t, Options{ReadTimeout: 100 * time.Millisecond})
	r := dialRaw(t, s.Addr)
	r.cmd(250, "EHLO client.test")
	// Say nothing: the server gives up with 421 and hangs up.
	code, _, err := r.text.ReadResponse(421)
	if err != nil {
		t.Fatalf("got %d, %v; want 421 on idle timeout", code, err)
	}
	if _, err := r.text.ReadLine(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the 421: %v, want EOF", err)
	}
}

// TestCloseEndsEverySession closes a server with sessions in every state
// that could block a goroutine.
func TestCloseEndsEverySession(t *testing.T) {
	for name, opts := range map[string]Options{
		"plain":       {},
		"stall":       {StallDuringData: true},
		"broken TLS":  {BrokenTLS: true, ImplicitTLS: true},
		"greeting421": {Greeting421: true},
	} {
		t.Run(name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			s := Start(t, opts)
			var conns []net.Conn
			for range 3 {
				c, err := net.Dial("tcp", s.Addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns = append(conns, c)
			}
			// One session mid-DATA, one mid-line, one idle.
			text := textproto.NewConn(conns[0])
			conns[0].SetDeadline(time.Now().Add(5 * time.Second))
			if !opts.Greeting421 && !opts.BrokenTLS {
				text.ReadResponse(220)
				for _, cmd := range []string{"EHLO c.test", "MAIL FROM:<a@b.test>", "RCPT TO:<c@d.test>", "DATA"} {
					text.PrintfLine("%s", cmd)
					text.ReadResponse(0)
				}
				conns[0].Write([]byte("partial body"))
			}
			conns[1].Write([]byte("EHLO unfinished"))
			// Let the server accept all three.
			deadline := time.Now().Add(5 * time.Second)
			for s.Connections() < 3 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}

			start := time.Now()
			s.Close()
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Close took %v", d)
			}
			if s.closeErr != nil {
				t.Error(s.closeErr)
			}
			// Every goroutine the server started has ended. Close waits
			// for each to signal that it is done, but a goroutine still
			// counts while it returns from there, hence the short wait.
			after := runtime.NumGoroutine()
			for wait := time.Now().Add(time.Second); after > before && time.Now().Before(wait); after = runtime.NumGoroutine() {
				time.Sleep(time.Millisecond)
			}
			if after > before {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines before Start, %d after Close:\n%s", before, after, buf[:runtime.Stack(buf, true)])
			}
		})
	}
}
