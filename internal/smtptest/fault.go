package smtptest

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FaultServer is a scriptable misbehaving SMTP server for tests of a
// client's reply accounting. It speaks enough SMTP by itself (EHLO, MAIL,
// RCPT, DATA, BDAT, RSET, NOOP, QUIT) to be a correct server when no fault
// applies, and like go-smtp and Postfix it writes its pipelined replies in
// one flush once it has read all the client sent. Faults change what it
// writes at a given step of a given transaction: an unsolicited or extra
// line, a drop, a 421, a slow drip, an endless multi-line reply, an
// over-long line, silence. It records what it decided for each
// transaction (Transactions), which is the truth a client's report is
// checked against.
type FaultServer struct {
	Addr string

	opts FaultOptions
	ln   net.Listener
	wg   sync.WaitGroup
	done chan struct{}

	mu    sync.Mutex
	conns int
	txns  []*FaultTxn
	open  []net.Conn
	ended []chan struct{} // per connection: closed when its session has ended
}

// FaultOptions configures a FaultServer. The zero value is a correct
// lock-step server that accepts every recipient.
type FaultOptions struct {
	Pipelining bool // advertise PIPELINING (RFC 2920)
	Chunking   bool // advertise CHUNKING (RFC 3030)
	// Rcpt decides a recipient's default reply ("250 2.1.5 ok" when nil).
	Rcpt   func(addr string) string
	Faults []Fault
	// CloseAfterMessage hangs up after each final reply.
	CloseAfterMessage bool
	// Splits cuts every flush into several writes (TCP segments), at these
	// offsets in turn. A cut that would fall between two lines is moved one
	// octet on, into the next line: a client that has read a complete line
	// has then always received the first octet of the next one, so what it
	// can see of a reply that follows does not depend on timing.
	Splits []int
}

// Step names a point where the server replies.
type Step uint8

// The steps a Fault can apply to.
const (
	StepGreeting Step = iota + 1
	StepEHLO
	StepMAIL
	StepRCPT  // Fault.Rcpt says which one
	StepDATA  // the 354 (or refusal) to DATA
	StepBody  // while reading the message data (Drop only)
	StepFinal // the reply to the final "." or to BDAT LAST
	StepRSET
)

// Action is what a Fault does at its step.
type Action uint8

// The actions.
const (
	Replace     Action = iota + 1 // write Text instead of the reply (and decide by it)
	Extra                         // write the reply, then Text, in the same flush
	Unsolicited                   // write Text, then the reply, in the same flush
	Drop                          // close the connection instead of replying
	Close421                      // reply "421 4.4.2 closing" and close
	Drip                          // write the reply one octet at a time, Delay apart
	Endless                       // a multi-line reply that never ends
	Overlong                      // a reply line of 5000 octets
	Hang                          // never reply; wait for the client to give up
)

// Fault changes the server's behaviour at one step.
type Fault struct {
	Conn  int // the n-th connection (1-based); 0 = every one
	Txn   int // the n-th MAIL on that connection (1-based); 0 = every one
	Step  Step
	Rcpt  int // with StepRCPT: the n-th RCPT of the transaction (1-based); 0 = every one
	Do    Action
	Text  string        // for Replace, Extra, Unsolicited: a reply line without CRLF
	Delay time.Duration // for Drip; default 2ms
}

// FaultTxn is what the server decided in one transaction.
type FaultTxn struct {
	Conn, Txn int
	From      string
	Rcpts     []FaultRcpt
	// Final is the code the server decided for the message: 2xx when it
	// took it (even if the reply was then lost to a fault), 0 when the
	// transaction never got that far.
	Final int
	Data  []byte
	// Injected: an Extra or Unsolicited line was written in this
	// transaction. Cut: a fault then ended the session before the
	// transaction's replies were all written. Together they make a reply
	// stream that an honest server could have written (a line too many,
	// then one too few), which no client can tell apart.
	Injected, Cut bool
}

// FaultRcpt is one RCPT and the code the server decided for it.
type FaultRcpt struct {
	Addr string
	Code int
}

// Accepted reports whether the server took the message for addr in this
// transaction.
func (t *FaultTxn) Accepted(addr string) bool {
	if t.Final < 200 || t.Final > 299 {
		return false
	}
	for _, r := range t.Rcpts {
		if r.Addr == addr && r.Code/100 == 2 {
			return true
		}
	}
	return false
}

// StartFault starts a FaultServer on loopback, stopped when the test ends.
func StartFault(t testing.TB, opts FaultOptions) *FaultServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &FaultServer{Addr: ln.Addr().String(), opts: opts, ln: ln, done: make(chan struct{})}
	s.wg.Go(s.accept)
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and ends every session.
func (s *FaultServer) Close() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Between transactions, a test acts on a session itself, once the client
// has finished with it (its Send returned): a timer in the server (close
// after so long idle, write after so long) can fire late on a loaded
// machine, while the client is still reading the transaction's last reply
// or already sending the next one, which are other scenarios (a line after
// the final reply; a close racing with commands in flight).

// Unsolicited writes line (without CRLF) to connection conn (1-based) now,
// as a server that speaks out of turn between transactions.
func (s *FaultServer) Unsolicited(t testing.TB, conn int, line string) {
	t.Helper()
	nc, _ := s.conn(t, conn)
	if _, err := nc.Write([]byte(line + "\r\n")); err != nil {
		t.Fatalf("smtptest: Unsolicited: %v", err)
	}
}

// CloseIdle ends connection conn as an idle timeout does: it writes last
// (a reply without CRLF, e.g. "421 4.4.2 idle timeout"; nothing when
// empty), closes the connection and returns once the session has ended.
func (s *FaultServer) CloseIdle(t testing.TB, conn int, last string) {
	t.Helper()
	nc, ended := s.conn(t, conn)
	if last != "" {
		nc.Write([]byte(last + "\r\n"))
	}
	nc.Close()
	waitEnded(t, conn, ended)
}

// WaitClosed returns once the session of connection conn has ended (say,
// by CloseAfterMessage) and its connection is closed.
func (s *FaultServer) WaitClosed(t testing.TB, conn int) {
	t.Helper()
	_, ended := s.conn(t, conn)
	waitEnded(t, conn, ended)
}

func (s *FaultServer) conn(t testing.TB, conn int) (net.Conn, chan struct{}) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if conn < 1 || conn > len(s.open) {
		t.Fatalf("smtptest: no connection %d", conn)
	}
	return s.open[conn-1], s.ended[conn-1]
}

func waitEnded(t testing.TB, conn int, ended chan struct{}) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("smtptest: the session of connection %d still runs after 10s", conn)
	}
}

// Connections returns how many connections were accepted.
func (s *FaultServer) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Transactions returns a copy of what the server decided, in order.
func (s *FaultServer) Transactions() []FaultTxn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]FaultTxn, len(s.txns))
	for i, t := range s.txns {
		out[i] = *t
		out[i].Rcpts = append([]FaultRcpt(nil), t.Rcpts...)
	}
	return out
}

func (s *FaultServer) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		ended := make(chan struct{})
		s.mu.Lock()
		s.conns++
		n := s.conns
		s.open = append(s.open, nc)
		s.ended = append(s.ended, ended)
		s.mu.Unlock()
		s.wg.Go(func() {
			defer close(ended) // after the close
			defer nc.Close()
			fs := &faultSession{s: s, nc: nc, n: n, r: bufio.NewReaderSize(nc, 64<<10)}
			fs.w = bufio.NewWriter(&splitWriter{nc: nc, splits: s.opts.Splits})
			fs.run()
		})
	}
}

// faultSession is the server side of one connection.
type faultSession struct {
	s    *FaultServer
	nc   net.Conn
	n    int // connection number
	r    *bufio.Reader
	w    *bufio.Writer
	txn  *FaultTxn
	txns int
	rcpt int // RCPTs in the current transaction
}

func (fs *faultSession) fault(step Step) *Fault {
	for i := range fs.s.opts.Faults {
		f := &fs.s.opts.Faults[i]
		if f.Step != step || (f.Conn != 0 && f.Conn != fs.n) {
			continue
		}
		if step >= StepMAIL && step <= StepRSET && f.Txn != 0 && f.Txn != fs.txns {
			continue
		}
		if step == StepRCPT && f.Rcpt != 0 && f.Rcpt != fs.rcpt {
			continue
		}
		return f
	}
	return nil
}

// reply writes rep (a complete reply without the final CRLF, lines joined
// by "\r\n") at step, through any fault, and returns the code decided and
// whether the session goes on.
func (fs *faultSession) reply(step Step, rep string) (int, bool) {
	code, _ := strconv.Atoi(rep[:3])
	f := fs.fault(step)
	if f == nil {
		fs.w.WriteString(rep + "\r\n")
		return code, true
	}
	code, ok := fs.act(f, code, rep)
	if fs.txn != nil {
		fs.s.mu.Lock()
		fs.txn.Injected = fs.txn.Injected || f.Do == Extra || f.Do == Unsolicited
		fs.txn.Cut = fs.txn.Cut || !ok && fs.txn.Injected
		fs.s.mu.Unlock()
	}
	return code, ok
}

// act carries out fault f on reply rep.
func (fs *faultSession) act(f *Fault, code int, rep string) (int, bool) {
	switch f.Do {
	case Replace:
		code, _ = strconv.Atoi(f.Text[:3])
		fs.w.WriteString(f.Text + "\r\n")
		if code == 421 {
			fs.w.Flush()
			return code, false
		}
	case Extra:
		fs.w.WriteString(rep + "\r\n" + f.Text + "\r\n")
	case Unsolicited:
		fs.w.WriteString(f.Text + "\r\n" + rep + "\r\n")
	case Drop:
		fs.w.Flush()
		return code, false
	case Close421:
		fs.w.WriteString("421 4.4.2 closing\r\n")
		fs.w.Flush()
		return 421, false
	case Drip:
		fs.w.Flush()
		d := f.Delay
		if d <= 0 {
			d = 2 * time.Millisecond
		}
		b := []byte(rep + "\r\n")
		for i := range b {
			if _, err := fs.nc.Write(b[i : i+1]); err != nil {
				return code, false
			}
			time.Sleep(d)
		}
	case Endless:
		fs.w.Flush()
		for i := 0; i < 100000; i++ {
			if _, err := fs.w.WriteString(rep[:3] + "-more\r\n"); err != nil {
				break
			}
		}
		fs.w.Flush()
		return code, false
	case Overlong:
		fs.w.WriteString(rep[:3] + " " + strings.Repeat("x", 5000) + "\r\n")
		fs.w.Flush()
		return code, false
	case Hang:
		fs.w.Flush()
		fs.r.WriteTo(io.Discard) // until the client closes
		return code, false
	}
	return code, true
}

// flushIfDrained writes the pending replies once the client's input is all
// read, as pipelining servers do (RFC 2920 §3.2).
func (fs *faultSession) flushIfDrained() error {
	if fs.r.Buffered() > 0 {
		return nil
	}
	return fs.w.Flush()
}

func (fs *faultSession) run() {
	if _, ok := fs.reply(StepGreeting, "220 fault.test ESMTP"); !ok {
		return
	}
	fs.w.Flush()
	idle := true // between transactions
	for {
		if err := fs.flushIfDrained(); err != nil {
			return
		}
		line, err := fs.readLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		ok := true
		switch strings.ToUpper(verb) {
		case "EHLO":
			rep := "250-fault.test\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES"
			if fs.s.opts.Pipelining {
				rep += "\r\n250-PIPELINING"
			}
			if fs.s.opts.Chunking {
				rep += "\r\n250-CHUNKING"
			}
			rep += "\r\n250 SIZE 10000000"
			_, ok = fs.reply(StepEHLO, rep)
		case "HELO":
			_, ok = fs.reply(StepEHLO, "250 fault.test")
		case "MAIL":
			ok = fs.mail(arg)
			idle = false
		case "RCPT":
			ok = fs.rcptCmd(arg)
		case "DATA":
			ok = fs.data()
			idle = ok
		case "BDAT":
			ok = fs.bdat(arg)
			idle = ok
		case "RSET":
			fs.txn = nil
			_, ok = fs.reply(StepRSET, "250 2.0.0 ok")
			idle = true
		case "NOOP":
			fs.w.WriteString("250 2.0.0 ok\r\n")
		case "QUIT":
			fs.w.WriteString("221 2.0.0 bye\r\n")
			fs.w.Flush()
			return
		default:
			fs.w.WriteString("500 5.5.2 unknown command\r\n")
		}
		if !ok {
			return
		}
		if idle && fs.s.opts.CloseAfterMessage && fs.txns > 0 && fs.txn == nil {
			fs.w.Flush()
			return
		}
	}
}

// readLine reads one command line.
func (fs *faultSession) readLine() (string, error) {
	fs.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	l, err := fs.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(l, "\r\n"), nil
}

func (fs *faultSession) mail(arg string) bool {
	fs.txns++
	fs.rcpt = 0
	t := &FaultTxn{Conn: fs.n, Txn: fs.txns, From: pathOf(arg)}
	fs.s.mu.Lock()
	fs.s.txns = append(fs.s.txns, t)
	fs.s.mu.Unlock()
	fs.txn = t
	code, ok := fs.reply(StepMAIL, "250 2.1.0 ok")
	fs.s.mu.Lock()
	if code/100 != 2 {
		fs.txn = nil
		t.Final = code // the transaction ends here
	}
	fs.s.mu.Unlock()
	return ok
}

func (fs *faultSession) rcptCmd(arg string) bool {
	if fs.txn == nil {
		fs.w.WriteString("503 5.5.1 MAIL first\r\n")
		return true
	}
	fs.rcpt++
	addr := pathOf(arg)
	rep := "250 2.1.5 ok"
	if fs.s.opts.Rcpt != nil {
		rep = fs.s.opts.Rcpt(addr)
	}
	code, ok := fs.reply(StepRCPT, rep)
	fs.s.mu.Lock()
	fs.txn.Rcpts = append(fs.txn.Rcpts, FaultRcpt{Addr: addr, Code: code})
	fs.s.mu.Unlock()
	return ok
}

// cut records that the session ends in the middle of the transaction.
func (fs *faultSession) cut() {
	fs.s.mu.Lock()
	fs.txn.Cut = fs.txn.Cut || fs.txn.Injected
	fs.s.mu.Unlock()
}

// accepted reports whether the transaction has an accepted recipient.
func (fs *faultSession) accepted() bool {
	if fs.txn == nil {
		return false
	}
	for _, r := range fs.txn.Rcpts {
		if r.Code/100 == 2 {
			return true
		}
	}
	return false
}

func (fs *faultSession) data() bool {
	if !fs.accepted() {
		fs.txn = nil
		fs.w.WriteString("554 5.5.1 no valid recipients\r\n")
		return true
	}
	code, ok := fs.reply(StepDATA, "354 go ahead")
	if !ok || code != 354 {
		if code >= 400 {
			fs.s.mu.Lock()
			fs.txn.Final = code // the message is refused here
			fs.s.mu.Unlock()
		}
		fs.txn = nil
		return ok
	}
	fs.w.Flush()
	var data []byte
	for {
		fs.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
		l, err := fs.r.ReadString('\n')
		if err != nil {
			return false
		}
		if l == ".\r\n" {
			break
		}
		data = append(data, strings.TrimPrefix(l, ".")...)
		if f := fs.fault(StepBody); f != nil && f.Do == Drop && len(data) > 0 {
			fs.cut()
			return false
		}
	}
	return fs.final(data)
}

func (fs *faultSession) bdat(arg string) bool {
	f := strings.Fields(arg)
	n, err := strconv.Atoi(f[0])
	if len(f) != 2 || err != nil || !strings.EqualFold(f[1], "LAST") {
		fs.w.WriteString("501 5.5.4 only BDAT n LAST\r\n")
		return true
	}
	data := make([]byte, n)
	if bf := fs.fault(StepBody); bf != nil && bf.Do == Drop && fs.accepted() {
		io.ReadFull(fs.r, data[:n/2])
		fs.cut()
		return false
	}
	if _, err := io.ReadFull(fs.r, data); err != nil {
		return false
	}
	if !fs.accepted() {
		fs.txn = nil
		fs.w.WriteString("554 5.5.1 no valid recipients\r\n")
		return true
	}
	return fs.final(data)
}

// final decides the message: 250 unless a fault says otherwise. A fault
// that loses the reply (drop, hang, endless, overlong) still took the
// message: the worst case for a client.
func (fs *faultSession) final(data []byte) bool {
	code, ok := fs.reply(StepFinal, "250 2.0.0 queued")
	fs.s.mu.Lock()
	fs.txn.Final = code
	fs.txn.Data = data
	fs.s.mu.Unlock()
	fs.txn = nil
	return ok
}

// pathOf extracts the address from "FROM:<a@b> SIZE=1" or "TO:<a@b>".
func pathOf(arg string) string {
	i := strings.IndexByte(arg, '<')
	j := strings.IndexByte(arg, '>')
	if i < 0 || j < i {
		return ""
	}
	return arg[i+1 : j]
}

// splitWriter writes each flush in pieces (see FaultOptions.Splits).
type splitWriter struct {
	nc     net.Conn
	splits []int
	next   int
}

func (w *splitWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		n := len(p)
		if len(w.splits) > 0 {
			n = w.splits[w.next%len(w.splits)]
			w.next++
			if n <= 0 || n >= len(p) {
				n = len(p)
			} else if p[n-1] == '\n' {
				n++ // never cut between two lines
			}
		}
		k, err := w.nc.Write(p[:n])
		total += k
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}
