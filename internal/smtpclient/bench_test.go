package smtpclient

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// benchBody is a 2 KiB canonical message.
var benchBody = func() []byte {
	var b bytes.Buffer
	b.WriteString("From: a@x.test\r\nTo: b@y.test\r\nSubject: benchmark\r\n\r\n")
	for b.Len() < 2048-80 {
		b.WriteString(strings.Repeat("lorem ipsum ", 6) + "\r\n")
	}
	b.WriteString(".dot-stuffed line\r\n")
	return b.Bytes()
}()

func benchSend(b *testing.B, addr string, ctx context.Context) {
	c, err := Dial(context.Background(), addr, "mx.test", &Config{LocalName: "client.test", TLS: TLSNone})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.Extension("PIPELINING"); !ok {
		b.Fatal("no PIPELINING")
	}
	r := bytes.NewReader(benchBody)
	tx := &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: r, Size: int64(len(benchBody))}
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(benchBody)
		res, err := c.Send(ctx, tx)
		if err != nil || res.Rcpts[0].Err != nil {
			b.Fatal(err, res.Rcpts[0].Err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// BenchmarkSendPipelined: one 2 KiB message, one recipient, a reused
// connection, pipelined, against go-smtp's server (whose allocations are
// counted in allocs/op too).
func BenchmarkSendPipelined(b *testing.B) {
	srv := smtptest.Start(b, smtptest.Options{})
	b.Run("background", func(b *testing.B) { benchSend(b, srv.Addr, context.Background()) })
	b.Run("cancelable", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		benchSend(b, srv.Addr, ctx)
	})
}

// BenchmarkSendSink is the same against a minimal sink that allocates
// nothing per message, so allocs/op is the client's own.
func BenchmarkSendSink(b *testing.B) {
	addr := sink(b)
	b.Run("background", func(b *testing.B) { benchSend(b, addr, context.Background()) })
	b.Run("cancelable", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		benchSend(b, addr, ctx)
	})
}

// sink is a pipelining SMTP server that accepts everything and keeps
// nothing. It flushes its replies only when it has no more input buffered,
// as a pipelining server should.
func sink(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
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
			wg.Go(func() { serveSink(nc) })
		}
	})
	b.Cleanup(func() {
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

func serveSink(nc net.Conn) {
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
		switch {
		case hasPrefixFold(line, "EHLO"):
			w.WriteString("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 10000000\r\n")
		case hasPrefixFold(line, "DATA"):
			w.WriteString("354 go ahead\r\n")
			w.Flush()
			for {
				l, err := r.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(l) == 3 && l[0] == '.' {
					break
				}
			}
			w.WriteString("250 2.0.0 queued\r\n")
		case hasPrefixFold(line, "QUIT"):
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

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && strings.EqualFold(string(b[:len(p)]), p)
}
