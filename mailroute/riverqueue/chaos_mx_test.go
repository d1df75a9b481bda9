package riverqueue_test

import (
	"cmp"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// chaosMX is the receiving side of TestChaos: one go-smtp server for every
// destination domain, answering after a random delay, deferring now and
// then, and — the one window no sender can close — sometimes hanging up
// after the final dot without a reply. It records every copy that reached
// the final dot, in order: a hung-up copy counts as arrived, since a real
// server may well have delivered it.
type chaosMX struct {
	rcpt4xx, data4xx, drop float64
	maxDelay               time.Duration

	mu     sync.Mutex
	copies map[string][]mxCopy // recipient → copies, in the order their transactions began
	drops  int
	begun  atomic.Int64 // numbers each transaction at MAIL
	srv    *smtp.Server
	addr   string
}

// mxCopy is one copy of a message for one recipient.
type mxCopy struct {
	// seq numbers the transaction at its MAIL. Copies are ordered by it,
	// not by when the server decided (after a random delay): a sender
	// killed or cut short mid-wait has its copy decided late, possibly
	// after a later attempt's delivery was saved, though it began first.
	seq     int64
	helo    string // the EHLO name: which incarnation of which process sent it
	dropped bool   // the server hung up after the final dot
	body    string
}

func startChaosMX(t *testing.T, rcpt4xx, data4xx, drop float64, maxDelay time.Duration) *chaosMX {
	mx := &chaosMX{rcpt4xx: rcpt4xx, data4xx: data4xx, drop: drop, maxDelay: maxDelay, copies: map[string][]mxCopy{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mx.addr = ln.Addr().String()
	mx.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &chaosSession{mx: mx, c: c}, nil
	}))
	mx.srv.Domain = "mx.chaos.test"
	mx.srv.ErrorLog = log.New(io.Discard, "", 0) // resets by killed clients are the point
	mx.srv.ReadTimeout, mx.srv.WriteTimeout = time.Minute, time.Minute
	go mx.srv.Serve(ln)
	t.Cleanup(func() { mx.srv.Close() })
	return mx
}

func (mx *chaosMX) port() string { return mx.addr[strings.LastIndexByte(mx.addr, ':')+1:] }

func (mx *chaosMX) delay() {
	if mx.maxDelay > 0 {
		time.Sleep(rand.N(mx.maxDelay))
	}
}

// snapshot returns a copy of what arrived.
func (mx *chaosMX) snapshot() (map[string][]mxCopy, int) {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	out := make(map[string][]mxCopy, len(mx.copies))
	for r, cs := range mx.copies {
		out[r] = append([]mxCopy(nil), cs...)
	}
	return out, mx.drops
}

type chaosSession struct {
	mx    *chaosMX
	c     *smtp.Conn
	seq   int64
	rcpts []string
}

var errChaos4xx = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "chaos: try again later"}

func (s *chaosSession) Mail(string, *smtp.MailOptions) error {
	s.seq = s.mx.begun.Add(1)
	return nil
}

func (s *chaosSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if rand.Float64() < s.mx.rcpt4xx {
		return errChaos4xx
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *chaosSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mx.delay()
	x := rand.Float64()
	drop := x < s.mx.drop
	if !drop && x < s.mx.drop+s.mx.data4xx {
		return errChaos4xx // refused: nothing arrived
	}
	s.mx.mu.Lock()
	for _, rc := range s.rcpts {
		cs := append(s.mx.copies[rc], mxCopy{seq: s.seq, helo: s.c.Hostname(), dropped: drop, body: string(b)})
		slices.SortFunc(cs, func(a, b mxCopy) int { return cmp.Compare(a.seq, b.seq) })
		s.mx.copies[rc] = cs
	}
	if drop {
		s.mx.drops++
	}
	s.mx.mu.Unlock()
	if drop {
		s.c.Conn().Close()
		return errors.New("chaos: hung up after the final dot")
	}
	return nil
}

func (s *chaosSession) Reset()        { s.rcpts = nil }
func (s *chaosSession) Logout() error { return nil }
