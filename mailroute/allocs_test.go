package mailroute

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
)

// The allocation budget of one Send of a 2 KiB message to one recipient
// on a kept session (issue 17): at most 15, whatever the context. The
// counts are exact and deterministic, so they are asserted; the sink
// below allocates nothing per message, so testing.AllocsPerRun counts the
// sender's alone.
const sendAllocBudget = 15

func TestSendAllocations(t *testing.T) {
	sink := allocSink(t)
	_, port, _ := net.SplitHostPort(sink)
	portN, _ := strconv.Atoi(port)
	dns := newDirectWorldDNS(t)
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"relay", Config{
			Hostname: "mail.sender.test",
			Router:   allSmarthost, // every destination to the relay
			Relay:    &Relay{Addr: sink, InsecurePlaintextLoopback: true},
		}},
		{"direct", Config{
			Hostname: "mail.sender.test",
			Router:   Rules{{Domains: []string{"*"}, Via: Direct}},
			Resolver: DNSServer(dns),
			Direct:   DirectOptions{Port: portN},
		}},
	} {
		for _, ctx := range []struct {
			name string
			ctx  context.Context
		}{{"background", context.Background()}, {"cancellable", cancellable}} {
			t.Run(tc.name+"/"+ctx.name, func(t *testing.T) {
				m, err := New(tc.cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				to := []string{benchRcpt}
				r := bytes.NewReader(bench2KiB)
				send := func() {
					r.Reset(bench2KiB)
					res, err := m.Send(ctx.ctx, benchFrom, to, r)
					if err != nil || res.Recipients[0].Status != Delivered {
						t.Fatalf("%v %+v", err, res.Recipients)
					}
				}
				send() // the session, the MX answer and the addresses, once
				n := testing.AllocsPerRun(200, send)
				t.Logf("%v allocations per message", n)
				if n > sendAllocBudget {
					t.Errorf("%v allocations per message, want at most %d", n, sendAllocBudget)
				}
			})
		}
	}
}

// newDirectWorldDNS serves dest.test's MX, mx.dest.test at 127.0.0.1.
func newDirectWorldDNS(t *testing.T) string {
	t.Helper()
	w := newDirectWorld(t)
	w.dns.Host("mx.dest.test", "127.0.0.1")
	w.dns.MX("dest.test", "mx.dest.test")
	return w.dns.Addr
}

// allocSink is an SMTP server on loopback that offers PIPELINING and
// CHUNKING, accepts everything, keeps nothing and allocates nothing per
// message. It flushes its replies only when no more input is buffered, as
// a pipelining server should.
func allocSink(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() { serveAllocSink(nc) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func serveAllocSink(nc net.Conn) {
	defer nc.Close()
	r := bufio.NewReaderSize(nc, 64<<10)
	w := bufio.NewWriterSize(nc, 4096)
	w.WriteString("220 sink.test\r\n")
	w.Flush()
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		verb := "    "
		if len(line) >= 4 {
			verb = allocSinkVerb(line[:4])
		}
		switch verb {
		case "EHLO":
			w.WriteString("250-sink.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 10000000\r\n")
		case "BDAT":
			// "BDAT <n> LAST": the size, digit by digit.
			n := 0
			for _, c := range line[5:] {
				if c < '0' || c > '9' {
					break
				}
				n = n*10 + int(c-'0')
			}
			if _, err := r.Discard(n); err != nil {
				return
			}
			w.WriteString("250 2.0.0 ok\r\n")
		case "QUIT":
			w.WriteString("221 2.0.0 bye\r\n")
			w.Flush()
			return
		default:
			w.WriteString("250 2.0.0 ok\r\n")
		}
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
	}
}

// allocSinkVerb names the verbs the sink tells apart, without allocating.
func allocSinkVerb(v []byte) string {
	for _, name := range []string{"EHLO", "BDAT", "QUIT"} {
		if bytes.EqualFold(v, []byte(name)) {
			return name
		}
	}
	return ""
}
