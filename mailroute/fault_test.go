package mailroute

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// The fault table: a message to three recipients (ok1 accepted, bad
// refused with 550, ok2 accepted by default) sent through a FaultServer that
// misbehaves at one step, on every path the engine has — BDAT pipelined,
// DATA pipelined, DATA lock-step — on a fresh session and on a reused one
// (a first message has gone through it). Each scenario asserts every
// recipient's reported status, and checks it against what the server
// decided: Delivered only if it took the message for that recipient (and
// exactly once), Failed only if it refused it; everything uncertain is
// Deferred.

// faultModes are the engine's paths.
var faultModes = []struct {
	name string
	opts smtptest.FaultOptions
}{
	{"bdat", smtptest.FaultOptions{Pipelining: true, Chunking: true}},
	{"data", smtptest.FaultOptions{Pipelining: true}},
	{"lock", smtptest.FaultOptions{}},
}

type faultScenario struct {
	name   string
	faults []smtptest.Fault // Conn and Txn are filled in: the scenario's transaction
	opts   func(o *smtptest.FaultOptions)
	// want maps a mode ("bdat/reused", "bdat", "reused", "*", most specific
	// first) to the statuses of ok1, bad, ok2: D delivered, T deferred,
	// F failed.
	want      map[string]string
	freshOnly bool          // the fault is on the way to a first session
	reuseOnly bool          // the fault is about a session between transactions
	idle      time.Duration // wait before the scenario's message (reused)
	// replyWait, when set, is how long the client waits for each reply
	// to MAIL, RCPT, DATA and the end of the data (the RFC 5321 stage
	// timeouts, shortened), for a server that never answers. The
	// Send's context stays at 10s, so a slow connect on a loaded
	// machine is not mistaken for the hang under test.
	replyWait time.Duration
}

func at(step smtptest.Step, do smtptest.Action, text string) smtptest.Fault {
	return smtptest.Fault{Step: step, Do: do, Text: text}
}

func atRcpt(n int, do smtptest.Action, text string) smtptest.Fault {
	return smtptest.Fault{Step: smtptest.StepRCPT, Rcpt: n, Do: do, Text: text}
}

// Redial outcomes: a fault found before the server could have taken the
// message is retried on a new session when the session was pooled.
var (
	clean      = map[string]string{"*": "DFD"}
	allDefer   = map[string]string{"*": "TTT"}
	redialData = map[string]string{"bdat": "TTT", "reused": "DFD", "*": "TTT"}
	redialAll  = map[string]string{"reused": "DFD", "*": "TTT"}
	// The refused recipient's reply was read in step; what came after
	// leaves the others uncertain.
	lostAfter = map[string]string{"*": "TFT"}
	// A DATA-only fault: BDAT never meets it.
	dataFault = map[string]string{"bdat": "DFD", "reused": "DFD", "*": "TFT"}
)

var faultScenarios = []faultScenario{
	{name: "clean", want: clean},
	// Unsolicited replies and extra lines.
	{name: "extra line after MAIL", faults: []smtptest.Fault{at(smtptest.StepMAIL, smtptest.Extra, "250 2.0.0 extra")}, want: redialData},
	{name: "extra 550 after MAIL", faults: []smtptest.Fault{at(smtptest.StepMAIL, smtptest.Extra, "550 5.0.0 extra")}, want: redialData},
	{name: "unsolicited before RCPT 2", faults: []smtptest.Fault{atRcpt(2, smtptest.Unsolicited, "250 2.1.5 surprise")}, want: redialData},
	{name: "extra line after last RCPT", faults: []smtptest.Fault{atRcpt(3, smtptest.Extra, "250 2.1.5 again")}, want: redialData},
	{name: "extra 421 after RCPT 1", faults: []smtptest.Fault{atRcpt(1, smtptest.Extra, "421 4.4.2 bye")}, want: redialData},
	// Found by FuzzServer: the 421 read in place of a RCPT reply must not
	// hide that a line too many came before it (ok1 took the 550).
	{name: "extra 550 after MAIL, extra 421 after each RCPT", faults: []smtptest.Fault{
		at(smtptest.StepMAIL, smtptest.Extra, "550 5.1.1 no"), atRcpt(0, smtptest.Extra, "421 4.4.2 bye")}, want: redialData},
	{name: "extra line after 354", faults: []smtptest.Fault{at(smtptest.StepDATA, smtptest.Extra, "250 2.0.0 extra")},
		want: map[string]string{"bdat": "DFD", "reused": "DFD", "*": "TTT"}},
	{name: "extra line after final reply", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Extra, "250 2.0.0 again")}, want: allDefer},
	{name: "extra 554 after final reply", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Extra, "554 5.0.0 no")}, want: allDefer},
	{name: "unsolicited before final reply", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Unsolicited, "250 2.0.0 surprise")}, want: allDefer},
	{name: "unsolicited 554 before final reply", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Unsolicited, "554 5.0.0 surprise")}, want: allDefer},
	{name: "extra line after EHLO", faults: []smtptest.Fault{at(smtptest.StepEHLO, smtptest.Extra, "250 2.0.0 extra")}, want: allDefer, freshOnly: true},
	{name: "extra line after greeting", faults: []smtptest.Fault{at(smtptest.StepGreeting, smtptest.Extra, "250 2.0.0 ok")}, want: allDefer, freshOnly: true},
	{name: "unsolicited before greeting", faults: []smtptest.Fault{at(smtptest.StepGreeting, smtptest.Unsolicited, "250 early")}, want: allDefer, freshOnly: true},
	{name: "unsolicited between transactions", reuseOnly: true, idle: 100 * time.Millisecond, want: clean,
		opts: func(o *smtptest.FaultOptions) { o.IdleWrite, o.IdleWriteAfter = "250 2.0.0 hello", 20*time.Millisecond }},
	// A drop and a 421 at every step.
	{name: "drop at greeting", faults: []smtptest.Fault{at(smtptest.StepGreeting, smtptest.Drop, "")}, want: allDefer, freshOnly: true},
	{name: "421 greeting", faults: []smtptest.Fault{at(smtptest.StepGreeting, smtptest.Close421, "")}, want: allDefer, freshOnly: true},
	{name: "drop at EHLO", faults: []smtptest.Fault{at(smtptest.StepEHLO, smtptest.Drop, "")}, want: allDefer, freshOnly: true},
	{name: "421 to EHLO", faults: []smtptest.Fault{at(smtptest.StepEHLO, smtptest.Close421, "")}, want: allDefer, freshOnly: true},
	{name: "drop at MAIL", faults: []smtptest.Fault{at(smtptest.StepMAIL, smtptest.Drop, "")}, want: redialData},
	{name: "421 to MAIL", faults: []smtptest.Fault{at(smtptest.StepMAIL, smtptest.Close421, "")}, want: redialAll},
	{name: "drop at RCPT 1", faults: []smtptest.Fault{atRcpt(1, smtptest.Drop, "")}, want: redialData},
	{name: "421 to RCPT 2", faults: []smtptest.Fault{atRcpt(2, smtptest.Close421, "")}, want: redialAll},
	{name: "drop at DATA", faults: []smtptest.Fault{at(smtptest.StepDATA, smtptest.Drop, "")}, want: dataFault},
	{name: "421 to DATA", faults: []smtptest.Fault{at(smtptest.StepDATA, smtptest.Close421, "")}, want: dataFault},
	{name: "drop in the body", faults: []smtptest.Fault{at(smtptest.StepBody, smtptest.Drop, "")}, want: map[string]string{"bdat": "TTT", "*": "TFT"}},
	{name: "drop at final reply (message taken)", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Drop, "")}, want: lostAfter},
	{name: "421 to final", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Close421, "")}, want: map[string]string{"*": "TFT"}},
	// Idle close.
	{name: "idle close, silent", reuseOnly: true, idle: 150 * time.Millisecond, want: clean,
		opts: func(o *smtptest.FaultOptions) { o.IdleClose = 50 * time.Millisecond }},
	{name: "idle close with 421", reuseOnly: true, idle: 150 * time.Millisecond, want: clean,
		opts: func(o *smtptest.FaultOptions) { o.IdleClose, o.IdleClose421 = 50*time.Millisecond, true }},
	{name: "close after each message", reuseOnly: true, idle: 20 * time.Millisecond, want: clean,
		opts: func(o *smtptest.FaultOptions) { o.CloseAfterMessage = true }},
	// The one ambiguity: a session idle long enough for the server to be
	// closing it sends MAIL and RCPT before the chunk, so a drop there is
	// certainly before anything was taken, and the message is redialled.
	{name: "drop at MAIL after idle (split)", reuseOnly: true, idle: 1100 * time.Millisecond, want: clean,
		faults: []smtptest.Fault{at(smtptest.StepMAIL, smtptest.Drop, "")}},
	// Slow drip, endless multi-line, over-long lines, silence.
	{name: "slow drip greeting", faults: []smtptest.Fault{at(smtptest.StepGreeting, smtptest.Drip, "")}, want: clean, freshOnly: true},
	{name: "slow drip RCPT replies", faults: []smtptest.Fault{atRcpt(0, smtptest.Drip, "")}, want: clean},
	{name: "slow drip final reply", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Drip, "")}, want: clean},
	{name: "endless multiline EHLO", faults: []smtptest.Fault{at(smtptest.StepEHLO, smtptest.Endless, "")}, want: allDefer, freshOnly: true},
	{name: "endless multiline RCPT 1", faults: []smtptest.Fault{atRcpt(1, smtptest.Endless, "")}, want: redialData},
	{name: "endless multiline final", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Endless, "")}, want: lostAfter},
	{name: "overlong line to MAIL", faults: []smtptest.Fault{at(smtptest.StepMAIL, smtptest.Overlong, "")}, want: redialData},
	{name: "overlong final reply", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Overlong, "")}, want: lostAfter},
	{name: "no final reply", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Hang, "")}, want: lostAfter, replyWait: time.Second},
	// A reused session whose MAIL reply never comes had sent no data on the
	// DATA paths (the body waits for 354), so nothing can have been
	// accepted and the transaction is redialled; BDAT had sent the chunk
	// with MAIL, so it may have been, and stays Deferred.
	{name: "no MAIL reply", faults: []smtptest.Fault{at(smtptest.StepMAIL, smtptest.Hang, "")},
		want: map[string]string{"data/reused": "DFD", "lock/reused": "DFD", "*": "TTT"}, replyWait: time.Second},
	// Mixed outcomes; 452 beside 250.
	{name: "452 beside 250", faults: []smtptest.Fault{atRcpt(3, smtptest.Replace, "452 4.5.3 too many recipients")}, want: clean},
	{name: "452 for all but the refused", faults: []smtptest.Fault{atRcpt(1, smtptest.Replace, "452 4.5.3 later"), atRcpt(3, smtptest.Replace, "452 4.5.3 later")},
		want: clean}, // the 550 is progress: the 452s go in a second transaction
	{name: "452 for every recipient", faults: []smtptest.Fault{atRcpt(0, smtptest.Replace, "452 4.5.3 later")}, want: allDefer},
	{name: "450 and 550 beside 250", faults: []smtptest.Fault{atRcpt(1, smtptest.Replace, "450 4.2.0 greylisted")}, want: map[string]string{"*": "TFD"}},
	{name: "every recipient refused", faults: []smtptest.Fault{atRcpt(1, smtptest.Replace, "550 5.1.1 no"), atRcpt(3, smtptest.Replace, "551 5.1.6 moved")}, want: map[string]string{"*": "FFF"}},
	{name: "MAIL refused 550", faults: []smtptest.Fault{at(smtptest.StepMAIL, smtptest.Replace, "550 5.7.1 sender refused")}, want: map[string]string{"*": "FFF"}},
	{name: "MAIL refused 451", faults: []smtptest.Fault{at(smtptest.StepMAIL, smtptest.Replace, "451 4.3.0 try later")}, want: allDefer},
	{name: "final 554", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Replace, "554 5.7.1 spam")}, want: map[string]string{"*": "FFF"}},
	{name: "final 451", faults: []smtptest.Fault{at(smtptest.StepFinal, smtptest.Replace, "451 4.3.0 later")}, want: map[string]string{"*": "TFT"}},
	{name: "354 to RCPT", faults: []smtptest.Fault{atRcpt(2, smtptest.Replace, "354 what")}, want: redialData},
	{name: "250 to DATA", faults: []smtptest.Fault{at(smtptest.StepDATA, smtptest.Replace, "250 2.0.0 sure")}, want: map[string]string{"bdat": "DFD", "reused": "DFD", "*": "TTT"}},
}

func (sc *faultScenario) expect(mode string, reused bool) string {
	r := "fresh"
	if reused {
		r = "reused"
	}
	for _, k := range []string{mode + "/" + r, mode, r, "*"} {
		if w, ok := sc.want[k]; ok {
			return w
		}
	}
	panic("no expectation for " + sc.name)
}

var faultRcpts = []string{"ok1@y.test", "bad@y.test", "ok2@y.test"}

const faultBody = "From: a@x.test\r\nTo: ok1@y.test\r\nSubject: fault\r\n\r\nhello\r\n"

// TestFaultTable runs every scenario on every path, through the relay
// and direct to an MX (an address literal, so no DNS), whose sessions are
// pooled and redialled alike.
func TestFaultTable(t *testing.T) {
	n := 0
	for _, sc := range faultScenarios {
		for _, via := range []Via{Relayed, Direct} {
			for _, mode := range faultModes {
				for _, reused := range []bool{false, true} {
					if reused && sc.freshOnly || !reused && sc.reuseOnly {
						continue
					}
					name := sc.name + "/" + via.String() + "/" + mode.name + "/fresh"
					if reused {
						name = sc.name + "/" + via.String() + "/" + mode.name + "/reused"
					}
					n++
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						runFault(t, sc, via, mode.name, mode.opts, reused)
					})
				}
			}
		}
	}
	if n < 40 {
		t.Errorf("%d scenarios, want at least 40", n)
	}
}

func runFault(t *testing.T, sc faultScenario, via Via, mode string, opts smtptest.FaultOptions, reused bool) {
	opts.Rcpt = func(addr string) string {
		if strings.HasPrefix(addr, "bad") {
			return "550 5.1.1 no such user"
		}
		return "250 2.1.5 ok"
	}
	txn := 1
	if reused {
		txn = 2
	}
	for _, f := range sc.faults {
		f.Conn = 1
		if f.Step != smtptest.StepGreeting && f.Step != smtptest.StepEHLO {
			f.Txn = txn
		}
		opts.Faults = append(opts.Faults, f)
	}
	if sc.opts != nil {
		sc.opts(&opts)
	}
	srv := smtptest.StartFault(t, opts)
	cfg := Config{Hostname: "client.test", Router: Rules{{Domains: []string{"*"}, Via: via}}}
	var waits Timeouts
	if w := sc.replyWait; w > 0 {
		waits = Timeouts{Mail: w, Rcpt: w, DataInit: w, DataFinal: w}
	}
	cfg.Direct.Timeouts = waits
	domain := "y.test"
	if via == Relayed {
		cfg.Relay = &Relay{Addr: srv.Addr, InsecurePlaintextLoopback: true, Timeouts: waits}
	} else {
		_, port, _ := net.SplitHostPort(srv.Addr)
		cfg.Direct.Port, _ = strconv.Atoi(port)
		domain = "[127.0.0.1]"
	}
	rcpts := make([]string, len(faultRcpts))
	for i, r := range faultRcpts {
		rcpts[i] = strings.Replace(r, "y.test", domain, 1)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if reused {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := m.Send(ctx, "a@x.test", []string{"warm@" + domain}, strings.NewReader(faultBody))
		cancel()
		if err != nil {
			t.Fatalf("first message: %v", err)
		}
		time.Sleep(sc.idle)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, _ := m.Send(ctx, "a@x.test", rcpts, strings.NewReader(faultBody))
	if res == nil || len(res.Recipients) != len(rcpts) {
		t.Fatalf("result %+v", res)
	}
	m.Close()
	srv.Close() // the record is complete
	got := make([]byte, len(res.Recipients))
	for i, r := range res.Recipients {
		got[i] = map[Status]byte{Delivered: 'D', Deferred: 'T', Failed: 'F'}[r.Status]
	}
	if want := sc.expect(mode, reused); string(got) != want {
		for _, r := range res.Recipients {
			t.Logf("%s: %v %v", r.Rcpt, r.Status, r.Err)
		}
		t.Errorf("statuses %s, want %s", got, want)
	}
	checkTruth(t, srv.Transactions(), res)
}

// checkTruth asserts each reported outcome against the server's record:
// Delivered only if the server took the message for that recipient, in
// exactly one transaction (no duplicate); Failed only if the server refused
// it (RCPT, MAIL or the final reply with 5xx) and never took it.
func checkTruth(t *testing.T, txns []smtptest.FaultTxn, res *Result) {
	t.Helper()
	for _, r := range res.Recipients {
		taken, refused := 0, false
		for i := range txns {
			x := &txns[i]
			if x.Accepted(r.Rcpt) {
				taken++
			}
			if x.Final >= 500 && len(x.Rcpts) == 0 {
				refused = true // MAIL refused
			}
			for _, rc := range x.Rcpts {
				if rc.Addr == r.Rcpt && (rc.Code >= 500 || rc.Code/100 == 2 && x.Final >= 500) {
					refused = true
				}
			}
		}
		switch r.Status {
		case Delivered:
			if taken != 1 {
				t.Errorf("%s reported delivered; the server took it %d times (%+v)", r.Rcpt, taken, txns)
			}
		case Failed:
			if !refused || taken > 0 {
				t.Errorf("%s reported failed; the server refused it: %v, took it %d times (%+v)", r.Rcpt, refused, taken, txns)
			}
		case Deferred:
			if r.Err == nil {
				t.Errorf("%s deferred without an error", r.Rcpt)
			}
		default:
			t.Errorf("%s: status %v", r.Rcpt, r.Status)
		}
	}
}
