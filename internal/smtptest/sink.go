package smtptest

import (
	"bufio"
	"bytes"
	"net"
	"sync"
	"testing"
)

// StartSink starts an SMTP server on 127.0.0.1 that offers PIPELINING
// (and CHUNKING when chunking is set), accepts every command and message,
// keeps nothing and allocates nothing per message: the ceiling a client's
// benchmark or allocation count is measured against. It flushes its
// replies only when no more input is buffered, as a pipelining server
// should. It stops when the test ends; it returns its address.
func StartSink(tb testing.TB, chunking bool) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ehlo := "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 10000000\r\n"
	if chunking {
		ehlo = "250-sink.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 10000000\r\n"
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
			wg.Go(func() { serveSink(nc, ehlo) })
		}
	})
	tb.Cleanup(func() {
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

func serveSink(nc net.Conn, ehlo string) {
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
			w.WriteString(ehlo)
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
		case hasPrefixFold(line, "BDAT"):
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

// hasPrefixFold reports whether b starts with the ASCII word p, in any
// case, without allocating.
func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && bytes.EqualFold(b[:len(p)], []byte(p))
}
