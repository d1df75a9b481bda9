package mailroute

import (
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/peertest"
)

// Against Postfix (BDAT, pipelined): three messages with mixed recipient
// outcomes on one pooled session, the third after an idle second, which
// makes the engine read the MAIL and RCPT replies before the chunk. Every
// outcome is Postfix's, the reply accounting sees no stray byte, and the
// one session carries all three.
func TestPeersEngineReusedSessionPostfix(t *testing.T) {
	env := peertest.Require(t)
	m := peerMailer(t, env, Config{Router: Rules{{Domains: []string{"*"}, Via: Direct}}})
	d := &dialCounter{}
	m.testDialer = d
	for i := range 3 {
		if i == 2 {
			time.Sleep(1200 * time.Millisecond)
		}
		body, id := uniqueBody(t)
		ok := "engine-ok@example.org"
		res, _ := send(t, m, "a@sender.test", []string{ok, "reject-engine@example.org", "tempfail-engine@example.org"}, body)
		wantStatus(t, res, ok, Delivered)
		wantStatus(t, res, "reject-engine@example.org", Failed)
		wantStatus(t, res, "tempfail-engine@example.org", Deferred)
		env.WaitMaildir(t, env.PostfixMaildir, func(m *peertest.Mail) bool {
			return strings.EqualFold(m.OriginalTo, ok) && m.Header("Message-ID") == id
		}, 10*time.Second)
	}
	if n := d.n.Load(); n != 1 {
		t.Errorf("%d connections, want 1 for the three messages", n)
	}
}
