package mailroute

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// A relay that wants AUTH refuses MAIL ("502 5.7.0 Please authenticate
// first", as maddy does) and then, as maddy sometimes does, answers the
// pipelined chunk's lines as commands: the transaction is out of step, so
// the recipient stays Deferred, and the error still says that the relay
// wants credentials (ErrRelayAuth), on the BDAT and the DATA path alike.
func TestRelayAuthFirstThenOutOfStep(t *testing.T) {
	for _, chunking := range []bool{true, false} {
		name := "data"
		if chunking {
			name = "bdat"
		}
		t.Run(name, func(t *testing.T) {
			srv := smtptest.StartFault(t, smtptest.FaultOptions{Pipelining: true, Chunking: chunking, Faults: []smtptest.Fault{
				// The refusal, then a line too many: every later reply
				// comes one line late.
				{Conn: 1, Txn: 1, Step: smtptest.StepMAIL, Do: smtptest.Replace, Text: "502 5.7.0 Please authenticate first\r\n500 5.5.2 Unknown command"},
			}})
			m, err := New(Config{Hostname: "client.test", Router: allSmarthost,
				Relay: &Relay{Addr: srv.Addr, InsecurePlaintextLoopback: true}})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := m.Send(ctx, "a@x.test", []string{"r@y.test"}, strings.NewReader("Subject: t\r\n\r\nt\r\n"))
			if !errors.Is(err, ErrRelayAuth) {
				t.Fatalf("err %v, want ErrRelayAuth", err)
			}
			r := res.Recipients[0]
			if r.Status != Deferred || !errors.Is(r.Err, ErrRelayAuth) {
				t.Errorf("recipient %v: %v", r.Status, r.Err)
			}
			if !errors.Is(r.Err, smtpclient.ErrOutOfStep) {
				t.Errorf("the line too many went unnoticed: %v", r.Err)
			}
		})
	}
}
