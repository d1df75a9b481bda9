package mailroute

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
	"github.com/mailroute/go-mailroute/internal/smtptest"
)

var _ smtpclient.Watcher = (*sendCtx)(nil)

// A caller's context that ends while the transaction waits for the final
// reply interrupts it at once (the engine registered its abort through
// the Send's context, not with context.AfterFunc on a derived one), and
// the recipient is Deferred: the data went out, the outcome is unknown.
func TestSendCancelledByCallerInTransaction(t *testing.T) {
	srv := smtptest.StartFault(t, smtptest.FaultOptions{Pipelining: true, Chunking: true,
		Faults: []smtptest.Fault{{Step: smtptest.StepFinal, Do: smtptest.Hang}}})
	_, port, _ := net.SplitHostPort(srv.Addr)
	portN, _ := strconv.Atoi(port)
	for _, via := range []string{"direct", "relay"} {
		t.Run(via, func(t *testing.T) {
			cfg := Config{Hostname: "client.test", Router: Rules{{Domains: []string{"*"}, Via: Direct}},
				Direct: DirectOptions{Port: portN, Timeouts: Timeouts{DataFinal: time.Minute}}}
			if via == "relay" {
				cfg.Router = allSmarthost
				cfg.Relay = &Relay{Addr: srv.Addr, InsecurePlaintextLoopback: true, Timeouts: Timeouts{DataFinal: time.Minute}}
			}
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			before := srv.Connections()
			go func() {
				for srv.Connections() == before {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(100 * time.Millisecond) // the data is out, the reply awaited
				cancel()
			}()
			start := time.Now()
			res, err := m.Send(ctx, "a@x.test", []string{"b@[127.0.0.1]"}, strings.NewReader(testBody))
			if err == nil || res.Recipients[0].Status != Deferred {
				t.Fatalf("%v %+v", err, res.Recipients)
			}
			if !errors.Is(res.Recipients[0].Err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled in it", res.Recipients[0].Err)
			}
			if took := time.Since(start); took > 30*time.Second {
				t.Errorf("the Send took %v: the cancellation did not interrupt the wait", took)
			}
		})
	}
}

// sendCtx is the caller's context plus Shutdown: checked as a context on
// its own, with and without the derived context made.
func TestSendCtx(t *testing.T) {
	type key struct{}
	for _, tc := range []struct {
		name     string
		parent   func() (context.Context, context.CancelFunc)
		derive   bool // ask for Done before the event
		event    string
		wantErr  error
		wantDone bool
	}{
		{"background/nothing", bg, false, "", nil, false},
		{"background/shutdown", bg, false, "shutdown", context.Canceled, true},
		{"background/shutdown/derived", bg, true, "shutdown", context.Canceled, true},
		{"background/left", bg, false, "leave", context.Canceled, true},
		{"background/left/derived", bg, true, "leave", context.Canceled, true},
		{"cancellable/nothing", cancellable, false, "", nil, false},
		{"cancellable/caller", cancellable, false, "caller", context.Canceled, true},
		{"cancellable/caller/derived", cancellable, true, "caller", context.Canceled, true},
		{"cancellable/shutdown", cancellable, false, "shutdown", context.Canceled, true},
		{"deadline/expired", expired, false, "", context.DeadlineExceeded, true},
		{"deadline/expired/derived", expired, true, "", context.DeadlineExceeded, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f inflight
			f.init()
			parent, cancel := tc.parent()
			defer cancel()
			parent = context.WithValue(parent, key{}, "v")
			s := f.enter(parent, new(sendCtx))
			if s == nil {
				t.Fatal("refused")
			}
			aborted := make(chan struct{}, 4)
			tok := s.Watch(func() { aborted <- struct{}{} })
			var child context.Context = s
			if tc.derive {
				_ = s.Done()
				var stop context.CancelFunc
				child, stop = context.WithCancel(s) // a lookup's own context
				defer stop()
			}
			left := false
			switch tc.event {
			case "shutdown":
				f.cancelAll()
			case "caller":
				cancel()
			case "leave":
				s.Unwatch(tok)
				f.leave(s)
				left = true
			}
			if got := s.Err(); !errors.Is(got, tc.wantErr) || (got == nil) != (tc.wantErr == nil) {
				t.Errorf("Err() = %v, want %v", got, tc.wantErr)
			}
			if s.Value(key{}) != "v" {
				t.Error("the caller's values are lost")
			}
			if dl, ok := s.Deadline(); ok != (tc.name[:8] == "deadline") || ok && dl.IsZero() {
				t.Errorf("Deadline() = %v, %v", dl, ok)
			}
			wait := 50 * time.Millisecond // for what must not happen
			if tc.wantDone {
				wait = 5 * time.Second
			}
			done := func(ch <-chan struct{}) bool {
				select {
				case <-ch:
					return true
				case <-time.After(wait):
					return false
				}
			}
			if got := done(s.Done()); got != tc.wantDone {
				t.Errorf("Done closed: %v, want %v", got, tc.wantDone)
			}
			if got := done(child.Done()); got != tc.wantDone {
				t.Errorf("a context derived from it done: %v, want %v", got, tc.wantDone)
			}
			if !left {
				// The engine's abort ran when the context ended, and not
				// otherwise.
				if got := done(aborted); got != tc.wantDone {
					t.Errorf("abort ran: %v, want %v", got, tc.wantDone)
				}
				s.Unwatch(tok)
				f.leave(s)
			}
			// Nothing runs after Unwatch.
			f.cancelAll()
			cancel()
			select {
			case <-aborted:
				if !tc.wantDone {
					t.Error("abort ran after Unwatch")
				}
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
}

func bg() (context.Context, context.CancelFunc) { return context.Background(), func() {} }

func cancellable() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func expired() (context.Context, context.CancelFunc) {
	return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
}
