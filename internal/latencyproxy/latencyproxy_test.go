package latencyproxy

import (
	"bufio"
	"crypto/sha256"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineServer answers like a pipelining SMTP server: a greeting, then one
// reply line per line received, each written separately, except for lines
// starting with "+", which get none; "QUIT" is answered and the connection
// closed.
func lineServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				io.WriteString(nc, "220 hello\r\n")
				r := bufio.NewReader(nc)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "QUIT") {
						io.WriteString(nc, "221 bye\r\n")
						return
					}
					if strings.HasPrefix(line, "+") {
						continue // a line that waits for more, like BDAT chunks
					}
					io.WriteString(nc, "250 "+line)
				}
			})
		}
	})
	return ln.Addr().String()
}

func start(t *testing.T, target string, delay time.Duration) *Proxy {
	t.Helper()
	p, err := Start(Options{Target: target, Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// client is a lock-step or pipelining client of lineServer.
type client struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, nc: nc, r: bufio.NewReader(nc)}
	c.read(1) // greeting
	return c
}

// send writes lines in one write and reads one reply per line.
func (c *client) send(lines ...string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, strings.Join(lines, "")); err != nil {
		c.t.Fatal(err)
	}
	c.read(len(lines))
}

func (c *client) read(n int) {
	c.t.Helper()
	for range n {
		if _, err := c.r.ReadString('\n'); err != nil {
			c.t.Fatal(err)
		}
	}
}

func TestCountsLockStepAndPipelined(t *testing.T) {
	p := start(t, lineServer(t), 0)
	c := dial(t, p.Addr)
	want := func(turns, rts int) {
		t.Helper()
		s := p.Conns()[0]
		if s.Turns != turns || s.RoundTrips != rts {
			t.Fatalf("turns %d round trips %d, want %d and %d", s.Turns, s.RoundTrips, turns, rts)
		}
	}
	want(0, 2) // connect + greeting
	c.send("EHLO x\r\n")
	want(1, 3)
	// A pipelined group is one round trip, however the server writes the
	// replies (one write each here).
	c.send("MAIL\r\n", "RCPT\r\n", "RCPT\r\n", "DATA\r\n")
	want(2, 4)
	// A group written in several writes without reading in between is
	// still one turn.
	for _, l := range []string{"+A\r\n", "+B\r\n", "C\r\n"} {
		io.WriteString(c.nc, l)
	}
	c.read(1)
	want(3, 5)
	c.send("QUIT\r\n")
	want(4, 6) // = turns + 2: the conversation ended with a reply
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Fatalf("after QUIT: %v, want EOF", err)
	}
	c.nc.Close()
	waitClosed(t, p)
	if n := p.Connections(); n != 1 {
		t.Fatalf("%d connections", n)
	}
	if s := p.Conns()[0]; s.ClientBytes != int64(len("EHLO x\r\nMAIL\r\nRCPT\r\nRCPT\r\nDATA\r\n+A\r\n+B\r\nC\r\nQUIT\r\n")) {
		t.Errorf("client bytes %d", s.ClientBytes)
	}
}

func waitClosed(t *testing.T, p *Proxy) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		open := false
		for _, s := range p.Conns() {
			open = open || s.Open
		}
		if !open {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a proxied connection is still open after both ends closed")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCountsPerConnection(t *testing.T) {
	p := start(t, lineServer(t), 0)
	a := dial(t, p.Addr)
	b := dial(t, p.Addr)
	a.send("1\r\n")
	a.send("2\r\n")
	b.send("1\r\n", "2\r\n")
	got := p.Conns()
	if len(got) != 2 || got[0].RoundTrips != 4 || got[1].RoundTrips != 3 || got[0].Turns != 2 || got[1].Turns != 1 {
		t.Fatalf("%+v", got)
	}
	if p.RoundTrips() != 7 || p.Turns() != 3 {
		t.Fatalf("totals %d %d", p.RoundTrips(), p.Turns())
	}
}

// The delay is applied once each way per exchange, and the server's
// greeting comes two round trips after connect. Only lower bounds are
// checked: a slow machine can only add time.
func TestDelay(t *testing.T) {
	const d = 20 * time.Millisecond
	p := start(t, lineServer(t), d)
	t0 := time.Now()
	c := dial(t, p.Addr)
	if el := time.Since(t0); el < 4*d {
		t.Errorf("greeting after %v, want at least %v", el, 4*d)
	}
	t1 := time.Now()
	c.send("A\r\n", "B\r\n", "C\r\n")
	if el := time.Since(t1); el < 2*d {
		t.Errorf("round trip in %v, want at least %v", el, 2*d)
	}
}

// A large transfer arrives intact and in order, and is not slowed down by
// the delay per chunk: chunks are delayed in a pipeline.
func TestBulkIntegrity(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sum := make(chan [32]byte, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		h := sha256.New()
		io.Copy(h, nc)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		io.WriteString(nc, "done\n") // after the client's half-close
		sum <- s
	}()
	p := start(t, ln.Addr().String(), 2*time.Millisecond)
	nc, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	if _, err := nc.Write(data); err != nil {
		t.Fatal(err)
	}
	nc.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(nc)
	if err != nil || string(reply) != "done\n" {
		t.Fatalf("reply %q %v", reply, err)
	}
	if got := <-sum; got != sha256.Sum256(data) {
		t.Fatal("the data arrived altered")
	}
	s := p.Conns()[0]
	if s.ClientBytes != int64(len(data)) || s.ServerBytes != 5 {
		t.Errorf("bytes %d and %d", s.ClientBytes, s.ServerBytes)
	}
	// The client sent everything before hearing anything: no turn; one
	// server run, plus the connection's opening.
	if s.Turns != 0 || s.RoundTrips != 2 {
		t.Errorf("turns %d round trips %d", s.Turns, s.RoundTrips)
	}
	waitClosed(t, p)
}

// The server hanging up ends the client's side too, and Close ends
// connections still open, with no goroutine left behind (the test would
// hang in Close otherwise).
func TestCloseEndsEverything(t *testing.T) {
	p := start(t, lineServer(t), time.Millisecond)
	c := dial(t, p.Addr)
	c.send("QUIT\r\n")
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Fatalf("after the server hung up: %v", err)
	}
	open := dial(t, p.Addr)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := open.r.ReadByte(); err == nil {
		t.Fatal("a connection survived Close")
	}
	if _, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		t.Fatal("still listening after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := start(t, addr, 0)
	nc, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := nc.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d %v from a proxy whose target is down", n, err)
	}
	if _, err := Start(Options{}); err == nil {
		t.Fatal("Start without a Target")
	}
}
