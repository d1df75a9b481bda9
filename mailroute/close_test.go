package mailroute

import (
	"bufio"
	"context"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// Closing a Mailer while a Send is at each stage — DNS, dial, TLS, the
// transaction — leaves no goroutine and no connection behind: Shutdown
// waits for the Send until its context ends, then cancels it; the Send
// returns with its recipient Deferred.

// gateResolver answers MX lookups only once released (or its context
// ends), with one host at 127.0.0.1.
type gateResolver struct {
	entered chan struct{}
	release chan struct{}
	calls   atomic.Int32
}

func newGateResolver() *gateResolver {
	return &gateResolver{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (g *gateResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	g.calls.Add(1)
	g.entered <- struct{}{}
	select {
	case <-g.release:
		return []*net.MX{{Host: "127.0.0.1", Pref: 10}}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gateResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	return []net.IPAddr{{IP: net.ParseIP("127.0.0.1")}}, nil
}

// gateDialer blocks every dial until its context ends, after signalling.
type gateDialer struct{ entered chan struct{} }

func (g *gateDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	g.entered <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// stallTLS is a server that offers STARTTLS, says 220 to it, and then never
// answers the handshake. It signals each STARTTLS.
func stallTLS(t *testing.T, entered chan struct{}) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				r := bufio.NewReader(nc)
				nc.Write([]byte("220 stall.test ESMTP\r\n"))
				r.ReadString('\n')
				nc.Write([]byte("250-stall.test\r\n250 STARTTLS\r\n"))
				r.ReadString('\n')
				nc.Write([]byte("220 go ahead\r\n"))
				entered <- struct{}{}
				r.ReadString(0) // until the client hangs up
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestCloseDuringSend(t *testing.T) {
	// A Send's context is the caller's, with Shutdown's cancellation added
	// (sendCtx): tried with a caller's context that can end too, since
	// the engine then registers with both.
	for _, stage := range []string{"dns", "dial", "tls", "transaction", "dns/cancellable", "transaction/cancellable"} {
		t.Run(stage, func(t *testing.T) {
			sendCtx := context.Background()
			if s, ok := strings.CutSuffix(stage, "/cancellable"); ok {
				stage = s
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				sendCtx = ctx
			}
			entered := make(chan struct{}, 16)
			cfg := Config{Hostname: "client.test", Router: Rules{{Domains: []string{"*"}, Via: Direct}}}
			rcpt := "b@[127.0.0.1]"
			var dialer *countingDialer
			switch stage {
			case "dns":
				g := newGateResolver()
				entered = g.entered
				cfg.Resolver = g
				rcpt = "b@slow.test"
				srv := smtptest.Start(t, smtptest.Options{})
				cfg.Direct.Port = srv.Port()
			case "dial":
				cfg.Direct.Port = 25 // never reached: the dialer blocks
			case "tls":
				cfg.Direct.Port = stallTLS(t, entered)
			case "transaction":
				srv := smtptest.StartFault(t, smtptest.FaultOptions{Pipelining: true, Chunking: true,
					Faults: []smtptest.Fault{{Step: smtptest.StepFinal, Do: smtptest.Hang}}})
				_, port, _ := net.SplitHostPort(srv.Addr)
				cfg.Direct.Port, _ = strconv.Atoi(port)
				cfg.Direct.Timeouts.DataFinal = time.Minute
				go func() {
					for srv.Connections() == 0 {
						time.Sleep(5 * time.Millisecond)
					}
					time.Sleep(100 * time.Millisecond) // the data is out, the reply awaited
					entered <- struct{}{}
				}()
			}
			base := runtime.NumGoroutine()
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if stage == "dial" {
				m.testDialer = &gateDialer{entered: entered}
			} else {
				dialer = &countingDialer{}
				m.testDialer = dialer
			}
			type out struct {
				res *Result
				err error
			}
			got := make(chan out, 1)
			go func() {
				res, err := m.Send(sendCtx, "a@x.test", []string{rcpt}, strings.NewReader(testBody))
				got <- out{res, err}
			}()
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the Send never reached the stage")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := m.Shutdown(ctx); err == nil {
				t.Error("Shutdown returned nil though it had to cancel a Send")
			}
			o := <-got // Shutdown has returned, so the Send has too
			if o.res == nil || len(o.res.Recipients) != 1 || o.res.Recipients[0].Status != Deferred {
				t.Fatalf("result %+v, %v", o.res, o.err)
			}
			if dialer != nil && dialer.open.Load() != 0 {
				t.Errorf("%d connections left open", dialer.open.Load())
			}
			waitGoroutinesBelow(t, base)
		})
	}
}

// A Send whose MX lookup is still running when Close begins: Close waits
// for it, so the session it then opens is closed too, and the message is
// delivered.
func TestCloseWaitsForSendInDNS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateResolver()
	m, err := New(Config{Hostname: "client.test", Resolver: g,
		Router: Rules{{Domains: []string{"*"}, Via: Direct}}, Direct: DirectOptions{Port: srv.Port()}})
	if err != nil {
		t.Fatal(err)
	}
	dialer := &countingDialer{}
	m.testDialer = dialer
	got := make(chan *Result, 1)
	go func() {
		res, _ := m.Send(context.Background(), "a@x.test", []string{"b@slow.test"}, strings.NewReader(testBody))
		got <- res
	}()
	<-g.entered
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	time.Sleep(50 * time.Millisecond) // Close is waiting
	close(g.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if res := <-got; res.Recipients[0].Status != Delivered {
		t.Fatalf("result %+v", res.Recipients[0])
	}
	if n := dialer.open.Load(); n != 0 {
		t.Errorf("%d connections left open after Close", n)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := m.Send(context.Background(), "a@x.test", []string{"b@slow.test"}, strings.NewReader(testBody)); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
}

// waitGoroutinesBelow fails when more than base goroutines are still
// running a moment after everything was closed.
func waitGoroutinesBelow(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
