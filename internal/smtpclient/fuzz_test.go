package smtpclient

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// FuzzServer runs the engine against a FaultServer scripted by the fuzzer:
// its extensions (PIPELINING, CHUNKING), each recipient's reply, up to four
// faults (reply codes, unsolicited and extra lines, drops, 421s, endless
// and over-long replies, at any step of either of two messages) and how
// its writes are split into packets. Two messages go on one session (a
// fresh one for the second when the first left it unusable). The
// invariant, for every recipient of every message:
//
//   - reported delivered (Err nil): the server took the message for it,
//     in exactly one transaction;
//   - reported failed (a permanent error): the server refused it and never
//     took it;
//   - anything else is deferred (a temporary error), which is always
//     allowed;
//   - no panic, and once the session and the server are closed, no
//     goroutine left behind.
//
// One case is exempt from the first two: a transaction in which the server
// wrote an extra line and then hung up before its last reply. That stream
// is exactly what an honest server could have written (one reply more
// here, one fewer there), so no client can tell; FaultTxn marks it.
func FuzzServer(f *testing.F) {
	for _, seed := range [][]byte{
		{0},
		{3},
		{3, byte(smtptest.StepMAIL), byte(smtptest.Extra), 0},
		{3, byte(smtptest.StepRCPT), byte(smtptest.Unsolicited), 0x21},
		{1, byte(smtptest.StepRCPT), byte(smtptest.Extra), 0x13},
		{0, byte(smtptest.StepMAIL), byte(smtptest.Extra), 0x10},
		{3, byte(smtptest.StepFinal), byte(smtptest.Extra), 0x02},
		{7, byte(smtptest.StepFinal), byte(smtptest.Drop), 0x00},
		{7, byte(smtptest.StepMAIL), byte(smtptest.Drop), 0x80},
		{11, byte(smtptest.StepRCPT), byte(smtptest.Close421), 0x82},
		{3, byte(smtptest.StepRCPT), byte(smtptest.Replace), 0x33, 0xff, 5, 9, 13},
		{1, byte(smtptest.StepDATA), byte(smtptest.Replace), 0x00},
		{3, byte(smtptest.StepEHLO), byte(smtptest.Extra), 0x00},
		{3, byte(smtptest.StepRCPT), byte(smtptest.Endless), 0x01},
		{3, byte(smtptest.StepFinal), byte(smtptest.Overlong), 0x80},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		base := runtime.NumGoroutine()
		fuzzOnce(t, script)
		waitGoroutines(t, base)
	})
}

// fuzzReplies are the lines a fault may write.
var fuzzReplies = []string{
	"250 2.0.0 ok", "550 5.1.1 no", "452 4.5.3 later", "421 4.4.2 bye",
	"354 go on", "451 4.3.0 later", "221 2.0.0 bye", "554 5.7.1 no",
}

func fuzzOnce(t *testing.T, script []byte) {
	b := func(i int) byte {
		if i < len(script) {
			return script[i]
		}
		return 0
	}
	mode := b(0)
	opts := smtptest.FaultOptions{Pipelining: mode&1 != 0, Chunking: mode&2 != 0}
	rcptCodes := []string{"250 2.1.5 ok", "550 5.1.1 no", "452 4.5.3 later", "450 4.2.0 grey"}
	policy := mode >> 4 // two bits per recipient's default reply, for r1..r2
	opts.Rcpt = func(addr string) string {
		switch {
		case strings.HasPrefix(addr, "r1"):
			return rcptCodes[policy&3]
		case strings.HasPrefix(addr, "r2"):
			return rcptCodes[(policy>>2)&3]
		}
		return rcptCodes[0]
	}
	i := 1
	for n := 0; n < 4 && i+2 < len(script); n++ {
		if script[i] == 0xff { // end of the faults, splits follow
			i++
			break
		}
		do := smtptest.Action(b(i+1)%8 + 1) // Replace…Overlong: no Hang, which only waits
		if do == smtptest.Drip {
			do = smtptest.Extra // dripping is slow and covered by the fault table
		}
		p := b(i + 2)
		opts.Faults = append(opts.Faults, smtptest.Fault{
			Conn: 1,
			Txn:  int(p>>7) + 1, // the first or the second message
			Step: smtptest.Step(b(i)%8 + 1),
			Rcpt: int(p>>4) & 3, // 0: every RCPT
			Do:   do,
			Text: fuzzReplies[p&7],
		})
		i += 3
	}
	for ; i < len(script) && len(opts.Splits) < 6; i++ {
		opts.Splits = append(opts.Splits, int(script[i]%64))
	}
	srv := smtptest.StartFault(t, opts)
	cfg := &Config{LocalName: "client.test", TLS: TLSNone}
	if mode&4 != 0 {
		cfg.SplitAfterIdle = -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var c *Conn
	type sent struct {
		from string
		res  *TxResult
	}
	var msgs []sent
	for k, from := range []string{"m1@x.test", "m2@x.test"} {
		if c == nil || !c.Usable() {
			if c != nil {
				c.Close()
			}
			var err error
			if c, err = Dial(ctx, srv.Addr, "fault.test", cfg); err != nil {
				c = nil
				continue
			}
		}
		body := "Subject: " + from + "\r\n\r\nhello\r\n"
		tx := &Tx{From: from, Rcpts: []string{"r1@y.test", "r2@y.test", "r3@y.test"}, Body: strings.NewReader(body)}
		if mode&8 != 0 || k == 1 {
			tx.Size = int64(len(body))
		}
		res, err := c.Send(ctx, tx)
		if res == nil || len(res.Rcpts) != 3 {
			t.Fatalf("message %d: result %+v, %v", k+1, res, err)
		}
		msgs = append(msgs, sent{from, res})
	}
	if c != nil {
		c.Close()
	}
	srv.Close()
	txns := srv.Transactions()
	for k, m := range msgs {
		for _, r := range m.res.Rcpts {
			taken, refused, exempt := 0, false, false
			for _, x := range txns {
				if x.From != m.from {
					continue
				}
				exempt = exempt || x.Cut
				if x.Accepted(r.Rcpt) {
					taken++
				}
				if x.Final >= 500 && len(x.Rcpts) == 0 {
					refused = true
				}
				for _, rc := range x.Rcpts {
					if rc.Addr == r.Rcpt && (rc.Code >= 500 || rc.Code/100 == 2 && x.Final >= 500) {
						refused = true
					}
				}
			}
			var e *Error
			if r.Err != nil && !errors.As(r.Err, &e) {
				t.Errorf("message %d %s: error %v is not an *Error", k+1, r.Rcpt, r.Err)
			}
			if exempt {
				continue
			}
			switch {
			case r.Err == nil && taken != 1:
				t.Errorf("message %d %s reported delivered; the server took it %d times\n%+v", k+1, r.Rcpt, taken, txns)
			case IsPermanent(r.Err) && (!refused || taken > 0):
				t.Errorf("message %d %s reported failed (%v); refused %v, taken %d times\n%+v", k+1, r.Rcpt, r.Err, refused, taken, txns)
			}
		}
	}
}

// waitGoroutines fails the test when goroutines started during it are
// still running a moment after everything was closed.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
