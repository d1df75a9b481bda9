package smtpclient

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

const testBody = "From: a@x.test\r\nSubject: test\r\n\r\nHello.\r\n.leading dot\r\n..two\r\n.\r\n"

func sendOne(t *testing.T, c *Conn, from string, rcpts ...string) *TxResult {
	t.Helper()
	res, err := c.Send(testCtx(t), &Tx{From: from, Rcpts: rcpts, Body: strings.NewReader(testBody), Size: int64(len(testBody))})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	for _, r := range res.Rcpts {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Rcpt, r.Err)
		}
	}
	return res
}

func TestSendDelivers(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{MaxMessageBytes: 1 << 20})
	c := dial(t, srv.Addr, nil)
	res := sendOne(t, c, "a@x.test", "b@y.test", "c@y.test")
	if res.Data.Code != 250 || len(res.Accepted) != 2 || res.Accepted[1] != "c@y.test" {
		t.Errorf("result %+v", res)
	}
	if res.Rcpts[0].Reply.Code != 250 || res.Rcpts[0].Reply.Enhanced != [3]int{2, 0, 0} {
		t.Errorf("RCPT reply %+v", res.Rcpts[0].Reply)
	}
	// A second message on the same connection, null sender, 8-bit.
	body := "Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9\r\n"
	if _, err := c.Send(testCtx(t), &Tx{From: "", Rcpts: []string{"d@y.test"}, Body: strings.NewReader(body), EightBit: true}); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if string(m.Data) != testBody || m.From != "a@x.test" || len(m.Rcpts) != 2 || m.MailOpts.Size != int64(len(testBody)) {
		t.Errorf("message 1: from %q rcpts %q size %d data %q", m.From, m.Rcpts, m.MailOpts.Size, m.Data)
	}
	m = msgs[1]
	if string(m.Data) != body || m.From != "" || m.MailOpts.Body != smtp.Body8BitMIME || m.MailOpts.Size != 0 || m.Conn != 1 {
		t.Errorf("message 2: from %q body %q size %d data %q conn %d", m.From, m.MailOpts.Body, m.MailOpts.Size, m.Data, m.Conn)
	}
}

// Proves the commands are pipelined: the peer reads MAIL, both RCPTs and
// DATA before it answers any of them (a lock-step client would wait for
// the MAIL reply and the peer would time out).
func TestSendPipelinedOneWrite(t *testing.T) {
	addr := scripted(t, func(p *peer) {
		p.greet("PIPELINING", "8BITMIME")
		p.expect("MAIL FROM:<a@x.test> BODY=8BITMIME")
		p.expect("RCPT TO:<b@y.test>")
		p.expect("RCPT TO:<c@y.test>")
		p.expect("DATA")
		p.send("250 2.1.0 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go\r\n")
		if d := p.readData(); d != testBody {
			p.t.Errorf("data %q", d)
		}
		p.send("250 2.0.0 queued as X\r\n")
		p.line()
	})
	c := dial(t, addr, nil)
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test", "c@y.test"},
		Body: strings.NewReader(testBody), EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	if e := asError(t, res.Rcpts[0].Err); e.Code != 550 || !e.Permanent || e.Command != "RCPT" {
		t.Errorf("rcpt 0: %v", e)
	}
	if res.Rcpts[1].Err != nil || res.Data.Message != "queued as X" {
		t.Errorf("rcpt 1: %v, data %+v", res.Rcpts[1].Err, res.Data)
	}
}

// The lock-step engine against go-smtp's server with PIPELINING hidden.
func TestSendLockStep(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{DisablePipelining: true, RcptPolicy: rcptPolicy})
	c := dial(t, srv.Addr, nil)
	if _, ok := c.Extension("PIPELINING"); ok {
		t.Fatal("PIPELINING still advertised")
	}
	checkPerRecipient(t, c, srv)

	// All refused: no DATA at all in lock-step.
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"reject1@y.test", "reject2@y.test"},
		Body: strings.NewReader(testBody)})
	if err != nil || res.Rcpts[0].Err == nil || res.Rcpts[1].Err == nil {
		t.Fatalf("all refused: %v %+v", err, res)
	}
	tr := srv.Transcript()
	if n := bytes.Count(tr, []byte("DATA\r\n")); n != 1 {
		t.Errorf("%d DATA commands, want 1 (none for the refused transaction)", n)
	}
	sendOne(t, c, "a@x.test", "ok@y.test")
}

// rcptPolicy: reject* → 550, tempfail* → 450, everyone else accepted.
func rcptPolicy(rcpt string) *smtp.SMTPError {
	switch {
	case strings.HasPrefix(rcpt, "reject"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	case strings.HasPrefix(rcpt, "tempfail"):
		return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "try later"}
	}
	return nil
}

func checkPerRecipient(t *testing.T, c *Conn, srv *smtptest.Server) {
	t.Helper()
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"ok@y.test", "reject@y.test", "tempfail@y.test"},
		Body: strings.NewReader(testBody)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rcpts[0].Err != nil {
		t.Errorf("ok: %v", res.Rcpts[0].Err)
	}
	if e := asError(t, res.Rcpts[1].Err); e.Code != 550 || !e.Permanent || e.Enhanced != [3]int{5, 1, 1} {
		t.Errorf("reject: %v", e)
	}
	if e := asError(t, res.Rcpts[2].Err); e.Code != 450 || !e.Temporary() {
		t.Errorf("tempfail: %v", e)
	}
	if len(res.Accepted) != 1 || res.Accepted[0] != "ok@y.test" {
		t.Errorf("accepted %q", res.Accepted)
	}
	msgs := srv.Messages()
	if m := msgs[len(msgs)-1]; len(m.Rcpts) != 1 || m.Rcpts[0] != "ok@y.test" || string(m.Data) != testBody {
		t.Errorf("message %q %q", m.Rcpts, m.Data)
	}
}

func TestSendPerRecipientPipelined(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{RcptPolicy: rcptPolicy})
	c := dial(t, srv.Addr, nil)
	checkPerRecipient(t, c, srv)
}

// Every recipient refused in a pipelined transaction: DATA is answered with
// an error, no body is written, RSET ends it and the connection carries
// the next message.
func TestSendAllRejectedPipelined(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{RcptPolicy: rcptPolicy})
	c := dial(t, srv.Addr, nil)
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"reject1@y.test", "tempfail@y.test"},
		Body: strings.NewReader(testBody)})
	if err != nil {
		t.Fatal(err)
	}
	if !IsPermanent(res.Rcpts[0].Err) || IsPermanent(res.Rcpts[1].Err) || len(res.Accepted) != 0 {
		t.Errorf("results %+v", res.Rcpts)
	}
	if !c.Usable() {
		t.Fatal("unusable after an all-refused transaction")
	}
	tr := srv.Transcript()
	if bytes.Contains(tr, []byte("Subject: test")) || !bytes.Contains(tr, []byte("DATA\r\nRSET\r\n")) {
		t.Errorf("transcript %q: want DATA then RSET, no body", tr)
	}
	sendOne(t, c, "a@x.test", "ok@y.test")
	if n := len(srv.Messages()); n != 1 || srv.Connections() != 1 {
		t.Errorf("%d messages on %d connections", n, srv.Connections())
	}
}

func TestSendMailRejected(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprint("pipelining=", pipelining), func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{DisablePipelining: !pipelining,
				MailPolicy: func(from string) *smtp.SMTPError {
					switch from {
					case "bad@x.test":
						return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}
					case "later@x.test":
						return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
					}
					return nil
				}})
			c := dial(t, srv.Addr, nil)
			for _, from := range []string{"bad@x.test", "later@x.test"} {
				res, err := c.Send(testCtx(t), &Tx{From: from, Rcpts: []string{"b@y.test", "c@y.test"}, Body: strings.NewReader(testBody)})
				e := asError(t, err)
				if e.Command != "MAIL" || e.Permanent != (from == "bad@x.test") {
					t.Errorf("%s: %v", from, err)
				}
				for _, r := range res.Rcpts {
					if r.Err != err {
						t.Errorf("%s: rcpt %s: %v", from, r.Rcpt, r.Err)
					}
				}
			}
			if !c.Usable() {
				t.Fatal("unusable after MAIL refused")
			}
			sendOne(t, c, "good@x.test", "b@y.test")
			if bytes.Contains(srv.Transcript(), []byte("Subject")) && len(srv.Attempts()) != 1 {
				t.Errorf("%d attempts", len(srv.Attempts()))
			}
		})
	}
}

// 150 recipients, server limit 10: every one delivered through repeated
// transactions on one connection, both via the 452 replies and via LIMITS.
func TestSendRecipientLimit(t *testing.T) {
	for _, useLimits := range []bool{false, true} {
		t.Run(fmt.Sprint("LIMITS=", useLimits), func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{MaxRecipients: 10})
			c := dial(t, srv.Addr, nil)
			c.ignoreLimits = !useLimits
			rcpts := make([]string, 150)
			for i := range rcpts {
				rcpts[i] = fmt.Sprintf("r%03d@y.test", i)
			}
			// A body that cannot seek: it must be buffered for re-sending.
			body := struct{ io.Reader }{strings.NewReader(testBody)}
			res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: rcpts, Body: body})
			if err != nil {
				t.Fatal(err)
			}
			wantAllDelivered(t, srv, res, testBody, 15, 150)
			// With LIMITS the first transaction stops at the 10th recipient;
			// without, all 150 go out and 140 come back 452.
			if cut := bytes.Contains(srv.Transcript(), []byte("r009@y.test>\r\nDATA\r\n")); cut != useLimits {
				t.Errorf("LIMITS=%v but first transaction cut after 10: %v", useLimits, cut)
			}
		})
	}
}

// A server that answers 452 to everything: no progress, the recipients keep
// their temporary 452 and Send does not loop.
func TestSendAll452(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "too many"}
	}})
	c := dial(t, srv.Addr, nil)
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"a@y.test", "b@y.test"}, Body: strings.NewReader(testBody)})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Rcpts {
		if e := asError(t, r.Err); e.Code != 452 || e.Permanent {
			t.Errorf("%s: %v", r.Rcpt, e)
		}
	}
	if n := bytes.Count(srv.Transcript(), []byte("MAIL FROM")); n != 1 {
		t.Errorf("%d transactions", n)
	}
}

func TestSendSizeExceeded(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{MaxMessageBytes: 1000})
	c := dial(t, srv.Addr, nil)
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader("x\r\n"), Size: 2000})
	e := asError(t, err)
	if !errors.Is(err, ErrSizeExceeded) || !e.Permanent || e.Command != "MAIL" || res.Rcpts[0].Err != err {
		t.Errorf("error %v", err)
	}
	if bytes.Contains(srv.Transcript(), []byte("MAIL")) {
		t.Error("MAIL sent")
	}
	if !c.Usable() {
		t.Error("unusable after a local refusal")
	}
}

func TestSendSMTPUTF8(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	c := dial(t, srv.Addr, nil)
	_, err := c.Send(testCtx(t), &Tx{From: "j\xc3\xb6rg@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(testBody), SMTPUTF8: true})
	if e := asError(t, err); !errors.Is(err, ErrSMTPUTF8Unsupported) || !e.Permanent || !strings.Contains(e.Error(), "SMTPUTF8") {
		t.Errorf("error %v", err)
	}
	if bytes.Contains(srv.Transcript(), []byte("MAIL")) {
		t.Error("MAIL sent")
	}

	srv = smtptest.Start(t, smtptest.Options{EnableSMTPUTF8: true})
	c = dial(t, srv.Addr, nil)
	if _, err := c.Send(testCtx(t), &Tx{From: "j\xc3\xb6rg@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(testBody), SMTPUTF8: true}); err != nil {
		t.Fatal(err)
	}
	if m := srv.Messages(); len(m) != 1 || !m[0].MailOpts.UTF8 || m[0].From != "j\xc3\xb6rg@x.test" {
		t.Errorf("messages %+v", m)
	}
}

// Without 8BITMIME the message goes anyway, without BODY=.
func TestSendEightBitWithout8BITMIME(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Disable8BitMIME: true})
	c := dial(t, srv.Addr, nil)
	if _, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: strings.NewReader(testBody), EightBit: true}); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(srv.Transcript(), []byte("BODY=")) {
		t.Error("BODY= sent to a server without 8BITMIME")
	}
}

func TestSendInvalidAddress(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	c := dial(t, srv.Addr, nil)
	for _, tx := range []Tx{
		{From: "a@x.test> SIZE=1", Rcpts: []string{"b@y.test"}},
		{From: "a@x.test", Rcpts: []string{"b@y.test", "c@y.test>\r\nRCPT TO:<evil@z.test"}},
		{From: "a@x.test\x00", Rcpts: []string{"b@y.test"}},
		{From: "<a@x.test", Rcpts: []string{"b@y.test"}},
		{From: "a@x.test", Rcpts: []string{"b@y.test\n"}},
		{From: "a@x.test", Rcpts: []string{""}},
	} {
		tx.Body = strings.NewReader(testBody)
		res, err := c.Send(testCtx(t), &tx)
		if !errors.Is(err, ErrInvalidAddress) || !IsPermanent(err) || res.Rcpts[0].Err != err {
			t.Errorf("%q %q: %v", tx.From, tx.Rcpts, err)
		}
	}
	if _, err := c.Send(testCtx(t), &Tx{From: "a@x.test"}); err == nil {
		t.Error("no recipients accepted")
	}
	if tr := srv.Transcript(); bytes.Contains(tr, []byte("MAIL")) || bytes.Contains(tr, []byte("RCPT")) {
		t.Errorf("transcript %q", tr)
	}
}

func TestSendDataRejected(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{MaxRecipients: 1, DataPolicy: func(m *smtptest.Message) *smtp.SMTPError {
		if bytes.Contains(m.Data, []byte("spam")) {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}
		}
		return nil
	}})
	c := dial(t, srv.Addr, nil)
	c.ignoreLimits = true
	res, err := c.Send(testCtx(t), &Tx{From: "a@x.test", Rcpts: []string{"b@y.test", "c@y.test"}, Body: strings.NewReader("spam\r\n")})
	e := asError(t, err)
	if e.Command != "." || e.Code != 554 || !e.Permanent || res.Data.Code != 554 {
		t.Fatalf("error %v, data %+v", err, res.Data)
	}
	// b was accepted then refused at the dot. c got 452 and is not retried
	// after the refusal, but the server never refused c: it keeps its
	// temporary 452 (issue 12: Failed only for what the server refused).
	if res.Rcpts[0].Err != err {
		t.Errorf("%s: %v", res.Rcpts[0].Rcpt, res.Rcpts[0].Err)
	}
	if e := asError(t, res.Rcpts[1].Err); e.Code != 452 || e.Command != "RCPT" || e.Permanent {
		t.Errorf("%s: %v", res.Rcpts[1].Rcpt, res.Rcpts[1].Err)
	}
	if !c.Usable() {
		t.Error("unusable after a refused message")
	}
	sendOne(t, c, "a@x.test", "b@y.test")
}

func TestErrorFormatting(t *testing.T) {
	e := &Error{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "no\nsuch user", Command: "RCPT", Host: "mx.test", Permanent: true}
	if got := e.Error(); got != "smtpclient: mx.test: RCPT: 550 5.1.1 no / such user" {
		t.Errorf("%q", got)
	}
	e = &Error{Command: ".", Host: "mx.test", Err: joinErrs([]error{ErrConnectionLost, io.EOF})}
	if got := e.Error(); !strings.HasPrefix(got, "smtpclient: mx.test: .: connection lost") || !strings.HasSuffix(got, ": EOF") {
		t.Errorf("%q", got)
	}
	if !errors.Is(e, io.EOF) || !errors.Is(e, ErrConnectionLost) || !e.Temporary() {
		t.Error("Is/Temporary")
	}
}

// wantAllDelivered checks that every recipient of res was delivered, that
// the server received body in wantMsgs transactions over one connection,
// and that they carried wantRcpts distinct recipients.
func wantAllDelivered(t *testing.T, srv *smtptest.Server, res *TxResult, body string, wantMsgs, wantRcpts int) {
	t.Helper()
	for _, r := range res.Rcpts {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Rcpt, r.Err)
		}
	}
	if len(res.Accepted) != wantRcpts {
		t.Errorf("%d accepted, want %d", len(res.Accepted), wantRcpts)
	}
	msgs := srv.Messages()
	seen := map[string]bool{}
	for _, m := range msgs {
		if string(m.Data) != body {
			t.Fatalf("message data %q", m.Data)
		}
		for _, r := range m.Rcpts {
			seen[r] = true
		}
	}
	if len(msgs) != wantMsgs || len(seen) != wantRcpts || srv.Connections() != 1 {
		t.Errorf("%d messages, %d distinct recipients, %d connections; want %d, %d, 1", len(msgs), len(seen), srv.Connections(), wantMsgs, wantRcpts)
	}
}
