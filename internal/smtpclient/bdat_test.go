package smtpclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// bdatBody has lines starting with dots, a lone "." line in the middle and
// at the end: with BDAT none of it is stuffed or unstuffed.
const bdatBody = "From: a@x.test\r\nSubject: chunk\r\n\r\n.leading dot\r\n..two\r\n.\r\nafter the dot line\r\n\r\n.\r\n"

func sizedTx(from, body string, rcpts ...string) *Tx {
	return &Tx{From: from, Rcpts: rcpts, Body: strings.NewReader(body), Size: int64(len(body))}
}

func bdatLine(body string) string {
	return "BDAT " + strconv.Itoa(len(body)) + " LAST\r\n"
}

// go-smtp's server offers CHUNKING and PIPELINING: a sized body goes as
// one BDAT LAST chunk, exactly as given, and DATA is never sent.
func TestBDATUsed(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{MaxMessageBytes: 1 << 20})
	c := dial(t, srv.Addr, nil)
	if _, ok := c.Extension("CHUNKING"); !ok {
		t.Fatal("go-smtp does not advertise CHUNKING")
	}
	for i, body := range []string{bdatBody, testBody, "Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9\r\n.\r\n"} {
		tx := sizedTx("a@x.test", body, "b@y.test", "c@y.test")
		tx.EightBit = i == 2
		res, err := c.Send(testCtx(t), tx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Data.Code != 250 || len(res.Accepted) != 2 || res.Rcpts[0].Err != nil || res.Rcpts[1].Err != nil {
			t.Errorf("message %d: result %+v", i, res)
		}
	}
	msgs := srv.Messages()
	if len(msgs) != 3 || srv.Connections() != 1 {
		t.Fatalf("%d messages on %d connections", len(msgs), srv.Connections())
	}
	for i, body := range []string{bdatBody, testBody} {
		if m := msgs[i]; string(m.Data) != body || m.MailOpts.Size != int64(len(body)) || len(m.Rcpts) != 2 {
			t.Errorf("message %d: data %q size %d rcpts %q", i, m.Data, m.MailOpts.Size, m.Rcpts)
		}
	}
	if m := msgs[2]; m.MailOpts.Body != smtp.Body8BitMIME || !bytes.HasSuffix(m.Data, []byte("\xc3\xa9\r\n.\r\n")) {
		t.Errorf("message 3: body %q data %q", m.MailOpts.Body, m.Data)
	}
	tr := srv.Transcript()
	if bytes.Contains(tr, []byte("DATA\r\n")) {
		t.Errorf("DATA sent: %q", tr)
	}
	want := "RCPT TO:<c@y.test>\r\n" + bdatLine(bdatBody) + bdatBody + "MAIL FROM:<a@x.test> SIZE="
	if !bytes.Contains(tr, []byte(want)) {
		t.Errorf("transcript %q\nwant it to contain %q", tr, want)
	}
	if n := bytes.Count(tr, []byte(" LAST\r\n")); n != 3 {
		t.Errorf("%d BDAT LAST commands, want 3", n)
	}
}

// Proves the one round trip: the peer reads MAIL, the RCPTs, BDAT and the
// whole chunk before it answers anything.
func TestBDATOneWrite(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet("PIPELINING", "CHUNKING", "8BITMIME", "SIZE 100000")
		for range 2 {
			p.exact("MAIL FROM:<a@x.test> BODY=8BITMIME SIZE=" + strconv.Itoa(len(bdatBody)))
			p.exact("RCPT TO:<b@y.test>")
			p.exact("RCPT TO:<c@y.test>")
			p.exact(strings.TrimSuffix(bdatLine(bdatBody), "\r\n"))
			chunk := make([]byte, len(bdatBody))
			if _, err := io.ReadFull(p.r, chunk); err != nil || string(chunk) != bdatBody {
				p.t.Errorf("chunk %q: %v", chunk, err)
			}
			p.send("250 2.1.0 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n250 2.0.0 queued as X\r\n")
		}
		p.exact("QUIT")
		p.send("221 bye\r\n")
	})
	c := dial(t, addr, nil)
	for range 2 {
		tx := sizedTx("a@x.test", bdatBody, "b@y.test", "c@y.test")
		tx.EightBit = true
		res, err := c.Send(testCtx(t), tx)
		if err != nil {
			t.Fatal(err)
		}
		if e := asError(t, res.Rcpts[0].Err); e.Code != 550 || !e.Permanent || e.Command != "RCPT" {
			t.Errorf("rcpt 0: %v", e)
		}
		if res.Rcpts[1].Err != nil || res.Data.Message != "queued as X" || len(res.Accepted) != 1 {
			t.Errorf("rcpt 1: %v, data %+v", res.Rcpts[1].Err, res.Data)
		}
	}
	if err := c.Quit(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// 550 and 450 beside an accepted recipient.
func TestBDATPerRecipient(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{RcptPolicy: rcptPolicy})
	c := dial(t, srv.Addr, nil)
	res, err := c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "ok@y.test", "reject@y.test", "tempfail@y.test"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Rcpts[0].Err != nil || res.Data.Code != 250 {
		t.Errorf("ok: %v, data %+v", res.Rcpts[0].Err, res.Data)
	}
	if e := asError(t, res.Rcpts[1].Err); e.Code != 550 || !e.Permanent || e.Enhanced != [3]int{5, 1, 1} || e.Command != "RCPT" {
		t.Errorf("reject: %v", e)
	}
	if e := asError(t, res.Rcpts[2].Err); e.Code != 450 || !e.Temporary() || e.Command != "RCPT" {
		t.Errorf("tempfail: %v", e)
	}
	if len(res.Accepted) != 1 || res.Accepted[0] != "ok@y.test" {
		t.Errorf("accepted %q", res.Accepted)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || len(msgs[0].Rcpts) != 1 || msgs[0].Rcpts[0] != "ok@y.test" || string(msgs[0].Data) != bdatBody {
		t.Errorf("messages %+v", msgs)
	}
	if !bytes.Contains(srv.Transcript(), []byte(bdatLine(bdatBody)+bdatBody)) {
		t.Error("no BDAT")
	}
}

// Every recipient refused: the server refuses BDAT after consuming the
// chunk, RSET follows, nothing is delivered and the connection carries the
// next message.
func TestBDATAllRejected(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{RcptPolicy: rcptPolicy})
	c := dial(t, srv.Addr, nil)
	res, err := c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "reject1@y.test", "tempfail@y.test"))
	if err != nil {
		t.Fatal(err)
	}
	if !IsPermanent(res.Rcpts[0].Err) || IsPermanent(res.Rcpts[1].Err) || len(res.Accepted) != 0 || res.Data.Code != 0 {
		t.Errorf("results %+v, data %+v", res.Rcpts, res.Data)
	}
	for _, r := range res.Rcpts {
		if asError(t, r.Err).Command != "RCPT" {
			t.Errorf("%s: %v", r.Rcpt, r.Err)
		}
	}
	if !c.Usable() {
		t.Fatal("unusable after an all-refused transaction")
	}
	if tr := srv.Transcript(); !bytes.Contains(tr, []byte(bdatLine(bdatBody)+bdatBody+"RSET\r\n")) {
		t.Errorf("transcript %q: want BDAT, the chunk, RSET", tr)
	}
	res, err = c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "ok@y.test"))
	if err != nil || res.Rcpts[0].Err != nil {
		t.Fatal(err, res.Rcpts[0].Err)
	}
	if msgs := srv.Messages(); len(msgs) != 1 || srv.Connections() != 1 || string(msgs[0].Data) != bdatBody {
		t.Errorf("%d messages on %d connections", len(msgs), srv.Connections())
	}
	if len(srv.Attempts()) != 1 {
		t.Errorf("%d attempts", len(srv.Attempts()))
	}
}

// The same against a scripted peer that answers BDAT 554 and checks the
// chunk was sent whole, then expects RSET.
func TestBDATAllRejectedScripted(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet("PIPELINING", "CHUNKING")
		p.expect("MAIL")
		p.expect("RCPT")
		p.exact(strings.TrimSuffix(bdatLine(testBody), "\r\n"))
		chunk := make([]byte, len(testBody))
		if _, err := io.ReadFull(p.r, chunk); err != nil || string(chunk) != testBody {
			p.t.Errorf("chunk %q: %v", chunk, err)
		}
		p.send("250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n")
		p.exact("RSET")
		p.send("250 ok\r\n")
		p.exact("NOOP")
		p.send("250 ok\r\n")
	})
	c := dial(t, addr, nil)
	res, err := c.Send(testCtx(t), sizedTx("a@x.test", testBody, "b@y.test"))
	if err != nil {
		t.Fatal(err)
	}
	if e := asError(t, res.Rcpts[0].Err); e.Code != 550 || e.Command != "RCPT" {
		t.Errorf("rcpt: %v", e)
	}
	if err := c.Noop(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// MAIL refused (pipelined before BDAT): the MAIL error decides, the chunk
// is consumed and refused by the server, the connection stays usable.
func TestBDATMailRejected(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{MailPolicy: func(from string) *smtp.SMTPError {
		if from == "bad@x.test" {
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}
		}
		return nil
	}})
	c := dial(t, srv.Addr, nil)
	res, err := c.Send(testCtx(t), sizedTx("bad@x.test", bdatBody, "b@y.test", "c@y.test"))
	e := asError(t, err)
	if e.Command != "MAIL" || !e.Permanent || e.Code != 553 {
		t.Errorf("error %v", err)
	}
	for _, r := range res.Rcpts {
		if r.Err != err {
			t.Errorf("rcpt %s: %v", r.Rcpt, r.Err)
		}
	}
	if !c.Usable() {
		t.Fatal("unusable after MAIL refused")
	}
	if _, err := c.Send(testCtx(t), sizedTx("good@x.test", bdatBody, "b@y.test")); err != nil {
		t.Fatal(err)
	}
	if a := srv.Attempts(); len(a) != 1 || a[0].From != "good@x.test" || string(a[0].Data) != bdatBody {
		t.Errorf("attempts %+v", a)
	}
}

// The reply to BDAT LAST refusing the message is the final reply, Command
// ".", as for DATA; the connection carries on.
func TestBDATFinalRejected(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{DataPolicy: func(m *smtptest.Message) *smtp.SMTPError {
		if bytes.Contains(m.Data, []byte("spam")) {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}
		}
		return nil
	}})
	c := dial(t, srv.Addr, nil)
	res, err := c.Send(testCtx(t), sizedTx("a@x.test", "spam\r\n", "b@y.test", "c@y.test"))
	e := asError(t, err)
	if e.Command != "." || e.Code != 554 || !e.Permanent || res.Data.Code != 554 {
		t.Fatalf("error %v, data %+v", err, res.Data)
	}
	for _, r := range res.Rcpts {
		if r.Err != err {
			t.Errorf("%s: %v", r.Rcpt, r.Err)
		}
	}
	if !c.Usable() {
		t.Error("unusable after a refused message")
	}
	if _, err := c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "b@y.test")); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(srv.Transcript(), []byte("DATA\r\n")) {
		t.Error("DATA sent")
	}
}

// 150 recipients, server limit 10: all delivered through repeated BDAT
// transactions on one connection, via 452 and via LIMITS, with a body that
// can seek and one that cannot.
func TestBDATRecipientLimit(t *testing.T) {
	for _, useLimits := range []bool{false, true} {
		for _, seekable := range []bool{false, true} {
			t.Run(fmt.Sprint("LIMITS=", useLimits, ",seekable=", seekable), func(t *testing.T) {
				srv := smtptest.Start(t, smtptest.Options{MaxRecipients: 10})
				c := dial(t, srv.Addr, nil)
				c.ignoreLimits = !useLimits
				rcpts := make([]string, 150)
				for i := range rcpts {
					rcpts[i] = fmt.Sprintf("r%03d@y.test", i)
				}
				var body io.Reader = strings.NewReader(bdatBody)
				if !seekable {
					body = struct{ io.Reader }{body}
				}
				res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: rcpts, Body: body, Size: int64(len(bdatBody))})
				if err != nil {
					t.Fatal(err)
				}
				wantAllDelivered(t, srv, res, bdatBody, 15, 150)
				tr := srv.Transcript()
				if cut := bytes.Contains(tr, []byte("r009@y.test>\r\n"+bdatLine(bdatBody))); cut != useLimits {
					t.Errorf("LIMITS=%v but first transaction cut after 10: %v", useLimits, cut)
				}
				if bytes.Contains(tr, []byte("DATA\r\n")) || bytes.Count(tr, []byte(" LAST\r\n")) != 15 {
					t.Errorf("want 15 BDAT and no DATA")
				}
			})
		}
	}
}

// DATA, not BDAT: a server without CHUNKING, a server without PIPELINING,
// Config.NoChunking, an unknown size, a body above the threshold.
func TestBDATNotUsed(t *testing.T) {
	t.Run("no CHUNKING", func(t *testing.T) {
		addr := scripted(t, func(p *peer) {
			p.greet("PIPELINING", "SIZE 100000")
			p.expect("MAIL FROM:<a@x.test> SIZE=")
			p.expect("RCPT")
			p.exact("DATA")
			p.send("250 ok\r\n250 ok\r\n354 go\r\n")
			if d := p.readData(); d != bdatBody {
				p.t.Errorf("data %q", d)
			}
			p.send("250 ok\r\n")
			p.line()
		})
		c := dial(t, addr, nil)
		if _, err := c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "b@y.test")); err != nil {
			t.Fatal(err)
		}
	})
	bigBody := strings.Repeat(strings.Repeat("x", 78)+"\r\n", maxChunk/80+1)
	for name, tc := range map[string]struct {
		opts smtptest.Options
		cfg  *Config
		tx   *Tx
	}{
		"no PIPELINING": {smtptest.Options{DisablePipelining: true}, nil, sizedTx("a@x.test", bdatBody, "b@y.test")},
		"NoChunking":    {smtptest.Options{}, &Config{LocalName: "client.test", NoChunking: true}, sizedTx("a@x.test", bdatBody, "b@y.test")},
		"unknown size":  {smtptest.Options{}, nil, &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(bdatBody)}},
		"above 1 MiB":   {smtptest.Options{MaxMessageBytes: 2 << 20}, nil, sizedTx("a@x.test", bigBody, "b@y.test")},
	} {
		t.Run(name, func(t *testing.T) {
			srv := smtptest.Start(t, tc.opts)
			c := dial(t, srv.Addr, tc.cfg)
			if _, ok := c.Extension("CHUNKING"); !ok {
				t.Fatal("CHUNKING not advertised")
			}
			res, err := c.Send(testCtx(t), tc.tx)
			if err != nil || res.Rcpts[0].Err != nil {
				t.Fatal(err, res.Rcpts[0].Err)
			}
			tr := srv.Transcript()
			if !bytes.Contains(tr, []byte("DATA\r\n")) || bytes.Contains(tr, []byte("BDAT")) {
				t.Errorf("want DATA and no BDAT")
			}
			want := bdatBody
			if name == "above 1 MiB" {
				want = bigBody
			}
			if m := srv.Messages(); len(m) != 1 || string(m[0].Data) != want {
				t.Errorf("messages %d", len(m))
			}
		})
	}
	// Exactly at the threshold: BDAT.
	srv := smtptest.Start(t, smtptest.Options{MaxMessageBytes: 2 << 20})
	c := dial(t, srv.Addr, nil)
	body := strings.Repeat(strings.Repeat("y", 62)+"\r\n", maxChunk/64)
	if _, err := c.Send(testCtx(t), sizedTx("a@x.test", body, "b@y.test")); err != nil {
		t.Fatal(err)
	}
	if m := srv.Messages(); len(m) != 1 || string(m[0].Data) != body || !bytes.Contains(srv.Transcript(), []byte(bdatLine(body))) {
		t.Error("1 MiB body not sent with BDAT")
	}
}

// The server hangs up once it has the chunk: the outcome is unknown.
func TestBDATCloseAfterData(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{CloseAfterDot: true})
	c := dial(t, srv.Addr, nil)
	res, err := c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "b@y.test"))
	e := asError(t, err)
	if !errors.Is(err, ErrConnectionLost) || e.Command != "." || e.Permanent || res.Rcpts[0].Err != err {
		t.Errorf("error %v", err)
	}
	if c.Usable() {
		t.Error("usable")
	}
	if a := srv.Attempts(); len(a) != 1 || a[0].Code != 0 || string(a[0].Data) != bdatBody {
		t.Errorf("attempts %+v", a)
	}
	if !bytes.Contains(srv.Transcript(), []byte("BDAT")) {
		t.Error("no BDAT")
	}
}

// A peer that takes everything and hangs up before even the MAIL reply:
// the message may have been accepted all the same.
func TestBDATCloseBeforeReplies(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.takeBDAT(len(bdatBody))
	})
	c := dial(t, addr, nil)
	res, err := c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "b@y.test"))
	e := asError(t, err)
	if !errors.Is(err, ErrConnectionLost) || e.Command != "." || e.Permanent || res.Rcpts[0].Err != err || c.Usable() {
		t.Errorf("error %v", err)
	}
}

// The reply to BDAT LAST gets DataFinal.
func TestBDATFinalReplyTimeout(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.takeBDAT(len(bdatBody))
		p.send("250 ok\r\n250 ok\r\n")
		p.wait()
	})
	c := dial(t, addr, &Config{Timeouts: Timeouts{DataFinal: 100 * time.Millisecond}})
	start := time.Now()
	_, err := c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "b@y.test"))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if e := asError(t, err); !errors.Is(err, ErrConnectionLost) || !errors.Is(err, os.ErrDeadlineExceeded) || IsPermanent(err) || e.Command != "." {
		t.Errorf("error %v", err)
	}
}

// Every recipient refused and then the connection drops before the BDAT
// reply: nothing can have been delivered, so not ErrConnectionLost.
func TestBDATLostAfterAllRejected(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.takeBDAT(len(bdatBody))
		p.send("250 ok\r\n550 no\r\n")
	})
	c := dial(t, addr, nil)
	_, err := c.Send(testCtx(t), sizedTx("a@x.test", bdatBody, "b@y.test"))
	if e := asError(t, err); errors.Is(err, ErrConnectionLost) || e.Command != "BDAT" || e.Permanent {
		t.Errorf("error %v", err)
	}
}

// The server stops reading in the middle of the chunk: the write deadline
// (DataBlock) fires and the error is temporary.
func TestBDATStallDuringChunk(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{StallDuringData: true})
	// A small send buffer, so that a chunk of at most 1 MiB cannot vanish
	// into the kernel's buffers.
	c := dial(t, srv.Addr, &Config{Timeouts: Timeouts{DataBlock: 200 * time.Millisecond}, Dialer: smallSendBuffer{}})
	body := strings.Repeat(strings.Repeat("x", 78)+"\r\n", maxChunk/80)
	start := time.Now()
	res, err := c.Send(testCtx(t), sizedTx("a@x.test", body, "b@y.test"))
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	e := asError(t, err)
	if e.Command != "BODY" || e.Permanent || !errors.Is(err, os.ErrDeadlineExceeded) || res.Rcpts[0].Err != err || c.Usable() {
		t.Errorf("error %v", err)
	}
}

type smallSendBuffer struct{}

func (smallSendBuffer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		err = nc.(*net.TCPConn).SetWriteBuffer(4096)
	}
	return nc, err
}

// A body whose length is not Tx.Size cannot be framed: nothing is
// delivered and the connection is closed.
func TestBDATSizeMismatch(t *testing.T) {
	for name, size := range map[string]int64{"shorter": int64(len(bdatBody)) + 1, "longer": int64(len(bdatBody)) - 1} {
		t.Run(name, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{})
			c := dial(t, srv.Addr, nil)
			res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(bdatBody), Size: size})
			e := asError(t, err)
			if e.Command != "BODY" || !e.Permanent || !strings.Contains(e.Error(), "Tx.Size") || res.Rcpts[0].Err != err || c.Usable() {
				t.Errorf("error %v", err)
			}
			srv.Close()
			if a := srv.Attempts(); len(a) != 0 {
				t.Errorf("attempts %+v", a)
			}
		})
	}
}

// A body reader that fails mid-way.
func TestBDATBodyReadError(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	c := dial(t, srv.Addr, nil)
	boom := errors.New("disk on fire")
	body := io.MultiReader(strings.NewReader("Subject: x\r\n\r\n"), errReader{boom})
	_, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: body, Size: 100})
	if !errors.Is(err, boom) || asError(t, err).Command != "BODY" || c.Usable() {
		t.Errorf("error %v", err)
	}
	srv.Close()
	if len(srv.Attempts()) != 0 {
		t.Error("a partial message was accepted")
	}
}

// SIZE is still checked before anything is written.
func TestBDATSizeExceeded(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{MaxMessageBytes: 100})
	c := dial(t, srv.Addr, nil)
	_, err := c.Send(testCtx(t), sizedTx("a@x.test", strings.Repeat("x", 200)+"\r\n", "b@y.test"))
	if !errors.Is(err, ErrSizeExceeded) || !IsPermanent(err) || !c.Usable() {
		t.Errorf("error %v", err)
	}
	if bytes.Contains(srv.Transcript(), []byte("MAIL")) {
		t.Error("MAIL sent")
	}
}

// takeBDAT greets with PIPELINING and CHUNKING and reads one pipelined
// MAIL, RCPT and BDAT chunk of n octets, replying nothing yet.
func (p *peer) takeBDAT(n int) {
	p.greet("PIPELINING", "CHUNKING")
	p.expect("MAIL")
	p.expect("RCPT")
	p.expect("BDAT")
	io.ReadFull(p.r, make([]byte, n))
}
