package smtpclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// The server stops reading in the middle of DATA: the write deadline fires
// and the error is temporary.
func TestSendStallDuringData(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{StallDuringData: true})
	c := dial(t, srv.Addr, &Config{Timeouts: Timeouts{DataBlock: 200 * time.Millisecond}})
	body := bytes.Repeat([]byte(strings.Repeat("x", 78)+"\r\n"), 100_000) // 8 MB
	start := time.Now()
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: bytes.NewReader(body)})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	e := asError(t, err)
	if e.Command != "BODY" || e.Permanent || !errors.Is(err, os.ErrDeadlineExceeded) || res.Rcpts[0].Err != err {
		t.Errorf("error %v", err)
	}
	if c.Usable() {
		t.Error("usable after a body write timeout")
	}
	if _, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}}); !errors.Is(err, ErrUnusable) {
		t.Errorf("Send on an unusable conn: %v", err)
	}
}

func TestSendCloseAfterDot(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{CloseAfterDot: true})
	c := dial(t, srv.Addr, nil)
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(testBody)})
	e := asError(t, err)
	if !errors.Is(err, ErrConnectionLost) || e.Command != "." || e.Permanent || res.Rcpts[0].Err != err {
		t.Errorf("error %v", err)
	}
	if c.Usable() {
		t.Error("usable")
	}
	if a := srv.Attempts(); len(a) != 1 || a[0].Code != 0 {
		t.Errorf("attempts %+v", a)
	}
}

func TestSendFinalReplyTimeout(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet("PIPELINING")
		p.expect("MAIL")
		p.expect("RCPT")
		p.expect("DATA")
		p.send("250 ok\r\n250 ok\r\n354 go\r\n")
		p.readData()
		p.wait()
	})
	c := dial(t, addr, &Config{Timeouts: Timeouts{DataFinal: 100 * time.Millisecond}})
	_, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(testBody)})
	if !errors.Is(err, ErrConnectionLost) || !errors.Is(err, os.ErrDeadlineExceeded) || IsPermanent(err) {
		t.Errorf("error %v", err)
	}
}

// Cancelling the context while a reply is awaited returns at once.
func TestSendContextCancel(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet("PIPELINING")
		p.expect("MAIL")
		p.wait()
	})
	c := dial(t, addr, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Send(ctx, &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(testBody)})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("returned after %v", d)
	}
	if !errors.Is(err, context.Canceled) || IsPermanent(err) || asError(t, err).Command != "MAIL" {
		t.Errorf("error %v", err)
	}
	if c.Usable() {
		t.Error("usable after an aborted transaction")
	}
}

func TestSendContextDeadline(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet()
		p.expect("MAIL")
		p.wait()
	})
	c := dial(t, addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Send(ctx, &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(testBody)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v", err)
	}
}

// A malformed RCPT reply makes the connection unusable.
func TestSendProtocolError(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet()
		p.expect("MAIL")
		p.send("250 ok\r\n")
		p.expect("RCPT")
		p.send("25O ok\r\n")
		p.line()
	})
	c := dial(t, addr, nil)
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(testBody)})
	if !errors.Is(err, ErrProtocol) || res.Rcpts[0].Err != err || c.Usable() {
		t.Errorf("error %v, usable %v", err, c.Usable())
	}
}

// A body reader that fails mid-way: the connection cannot be saved.
func TestSendBodyReadError(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	c := dial(t, srv.Addr, nil)
	boom := errors.New("disk on fire")
	body := io.MultiReader(strings.NewReader("Subject: x\r\n\r\n"), errReader{boom})
	_, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: body})
	if !errors.Is(err, boom) || asError(t, err).Command != "BODY" || c.Usable() {
		t.Errorf("error %v", err)
	}
	if len(srv.Messages()) != 0 {
		t.Error("a partial message was accepted")
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
