package smtpclient

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// deadlineConn counts the deadlines set on a TCP connection; it stays a
// syscall.Conn (embedded), so the socket checks work as on any session.
type deadlineConn struct {
	*net.TCPConn
	sets *atomic.Int32
}

func (c deadlineConn) SetDeadline(t time.Time) error {
	c.sets.Add(1)
	return c.TCPConn.SetDeadline(t)
}

func (c deadlineConn) SetReadDeadline(t time.Time) error {
	c.sets.Add(1)
	return c.TCPConn.SetReadDeadline(t)
}

func (c deadlineConn) SetWriteDeadline(t time.Time) error {
	c.sets.Add(1)
	return c.TCPConn.SetWriteDeadline(t)
}

type deadlineDialer struct{ sets atomic.Int32 }

func (d *deadlineDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return deadlineConn{nc.(*net.TCPConn), &d.sets}, nil
}

// Messages sent back to back re-arm the socket's timers rarely: a
// deadline is set only before a read that has to wait for the socket,
// and one already set that is earlier than due by at most 1/1024 of its
// timeout stands. A hundred messages set far fewer than the four
// deadlines per message (one write, three replies) of setting them all.
func TestDeadlinesBackToBack(t *testing.T) {
	addr := smtptest.StartSink(t, true)
	d := &deadlineDialer{}
	c, err := Dial(testCtx(t), addr, "sink.test", &Config{LocalName: "client.test", TLS: TLSNone, Dialer: d})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := "Subject: x\r\n\r\nhello\r\n"
	r := strings.NewReader(body)
	tx := &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: r, Size: int64(len(body))}
	var res TxResult
	send := func(ctx context.Context) {
		r.Reset(body)
		if _, err := c.SendInto(ctx, tx, &res); err != nil || res.Rcpts[0].Err != nil {
			t.Fatal(err, res.Rcpts[0].Err)
		}
	}
	before := d.sets.Load()
	for range 100 {
		send(context.Background())
	}
	t.Logf("%d deadlines set for 100 messages", d.sets.Load()-before)
	if n := d.sets.Load() - before; n > 20 {
		t.Errorf("%d deadlines set for 100 messages, want at most 20", n)
	}
	// A context's deadline is the deadline: set once, as it does not move.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before = d.sets.Load()
	for range 100 {
		send(ctx)
	}
	if n := d.sets.Load() - before; n > 4 {
		t.Errorf("%d deadlines set for 100 messages under one context deadline, want at most 4", n)
	}
}

// A deadline kept from an earlier message never lets a wait run longer
// than its own stage timeout: after a message whose final reply had 10
// minutes, the next one's final reply still times out after DataFinal,
// and after one under a context deadline long past, a wait still gets its
// stage timeout (and a pooled session is still found usable).
func TestDeadlineNotInheritedFromEarlierMessages(t *testing.T) {
	var n atomic.Int32
	addr := scripted(t, func(p *peer) {
		p.greet("PIPELINING", "CHUNKING")
		for {
			if _, err := p.r.ReadString('\n'); err != nil { // MAIL
				return
			}
			p.expect("RCPT")
			p.expect("BDAT")
			io.ReadFull(p.r, make([]byte, len(bdatBody)))
			if n.Add(1) == 3 {
				p.send("250 ok\r\n250 ok\r\n") // and never the final reply
				p.wait()
				return
			}
			p.send("250 ok\r\n250 ok\r\n250 queued\r\n")
		}
	})
	c := dial(t, addr, &Config{LocalName: "client.test", Timeouts: Timeouts{DataFinal: 300 * time.Millisecond}})
	if _, err := c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "b@y.test")); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Send(short, sizedTx("a@x.test", bdatBody, "b@y.test")); err != nil {
		t.Fatal(err)
	}
	<-short.Done()
	time.Sleep(50 * time.Millisecond) // the read deadline that context left is past
	start := time.Now()
	_, err := c.Send(context.Background(), sizedTx("a@x.test", bdatBody, "b@y.test"))
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("error %v, want the final reply's timeout", err)
	}
	if took < 250*time.Millisecond || took > 5*time.Second {
		t.Errorf("the final reply timed out after %v, want DataFinal (300ms)", took)
	}
}
