package mailroute

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// The allocation budget of one Send of a 2 KiB message to one recipient
// on a kept session (issue 17 asks for at most 15, whatever the context).
// The counts are exact and deterministic, so each case's is asserted; the
// sink (smtptest.StartSink) allocates nothing per message, so
// testing.AllocsPerRun counts the sender's alone. Two: the Send's own
// state (sendCall) and its Result, whatever the context: the engine's
// abort is bound to a caller's context that can end through one
// registration that Sends with the same context share (ctxWatch).
const sendAllocBudget = 2

func TestSendAllocations(t *testing.T) {
	sink := smtptest.StartSink(t, true)
	_, port, _ := net.SplitHostPort(sink)
	portN, _ := strconv.Atoi(port)
	dns := newDirectWorldDNS(t)
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"relay", Config{
			Hostname: "mail.sender.test",
			Router:   allSmarthost, // every destination to the relay
			Relay:    &Relay{Addr: sink, InsecurePlaintextLoopback: true},
		}},
		{"direct", Config{
			Hostname: "mail.sender.test",
			Router:   Rules{{Domains: []string{"*"}, Via: Direct}},
			Resolver: DNSServer(dns),
			Direct:   DirectOptions{Port: portN},
		}},
	} {
		for _, ctx := range []struct {
			name string
			ctx  context.Context
			want float64
		}{{"background", context.Background(), sendAllocBudget}, {"cancellable", cancellable, sendAllocBudget}} {
			t.Run(tc.name+"/"+ctx.name, func(t *testing.T) {
				m, err := New(tc.cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				to := []string{benchRcpt}
				r := bytes.NewReader(bench2KiB)
				send := func() {
					r.Reset(bench2KiB)
					res, err := m.Send(ctx.ctx, benchFrom, to, r)
					if err != nil || res.Recipients[0].Status != Delivered {
						t.Fatalf("%v %+v", err, res.Recipients)
					}
				}
				send() // the session, the MX answer and the addresses, once
				n := testing.AllocsPerRun(200, send)
				t.Logf("%v allocations per message", n)
				if raceEnabled {
					return // counts are not exact under the race detector; the Sends ran
				}
				if n > ctx.want {
					t.Errorf("%v allocations per message, want at most %v", n, ctx.want)
				}
			})
		}
	}
}

// newDirectWorldDNS serves dest.test's MX, mx.dest.test at 127.0.0.1.
func newDirectWorldDNS(t *testing.T) string {
	t.Helper()
	w := newDirectWorld(t)
	w.dns.Host("mx.dest.test", "127.0.0.1")
	w.dns.MX("dest.test", "mx.dest.test")
	return w.dns.Addr
}
