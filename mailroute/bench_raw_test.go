//go:build unix

package mailroute

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"
)

// The ceiling of BenchmarkSend2KiB: a raw pipelined client that does the
// least any SMTP client can do for one message on a kept connection, one
// write (MAIL, RCPT, "BDAT <n> LAST" and the body) and one wait (the three
// replies), with no checks, no deadlines, no result. mailroute's rows are
// measured against it in the same run:
//
//	go test ./mailroute -run '^$' -bench 'Send2KiB/loopback/(raw|mailroute-(smarthost|direct)$)' -count 5
func init() {
	benchContenders = append(benchContenders, benchContender{"raw-pipelined", func(b *testing.B, t *benchTarget) {
		if t.tls != nil {
			b.Skip("the plaintext rows are the comparison")
		}
		c, err := dialRawPipelined(t.addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.nc.Close()
		c.send(b) // the first message, as the other contenders send one before the timer
		m := t.meter(b)
		for range b.N {
			c.send(b)
		}
		m.done()
	}})
}

type rawPipelined struct {
	nc  net.Conn
	r   *bufio.Reader
	msg []byte // the whole write of one message, built once
}

func dialRawPipelined(addr string) (*rawPipelined, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &rawPipelined{nc: nc, r: bufio.NewReaderSize(nc, 4096)}
	if err := c.reply(); err != nil { // greeting
		return nil, err
	}
	if _, err := nc.Write([]byte("EHLO bench.test\r\n")); err != nil {
		return nil, err
	}
	if err := c.reply(); err != nil {
		return nil, err
	}
	var w bytes.Buffer
	w.WriteString("MAIL FROM:<" + benchFrom + "> SIZE=" + strconv.Itoa(len(bench2KiB)) + "\r\n")
	w.WriteString("RCPT TO:<" + benchRcpt + ">\r\n")
	w.WriteString("BDAT " + strconv.Itoa(len(bench2KiB)) + " LAST\r\n")
	w.Write(bench2KiB)
	c.msg = w.Bytes()
	return c, nil
}

func (c *rawPipelined) send(b *testing.B) {
	if _, err := c.nc.Write(c.msg); err != nil {
		b.Fatal(err)
	}
	for range 3 {
		if err := c.reply(); err != nil {
			b.Fatal(err)
		}
	}
}

// reply reads one reply, multi-line or not, and wants 2xx.
func (c *rawPipelined) reply() error {
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) < 4 || line[0] != '2' {
			return fmt.Errorf("reply %q", line)
		}
		if line[3] != '-' {
			return nil
		}
	}
}
