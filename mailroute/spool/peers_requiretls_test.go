package spool_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/peertest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// TestPeersREQUIRETLSQueued, against real peers: a REQUIRETLS message
// sent through Postfix's submission service (verified TLS, but no
// REQUIRETLS) is queued in a directory with the mark, and its retry there
// stays deferred with ErrREQUIRETLS; after a restart on the directory with
// maddy's submission service as the relay (it offers REQUIRETLS), the
// retry delivers it, with the MAIL parameter maddy accepted, and it is in
// maddy's store.
func TestPeersREQUIRETLSQueued(t *testing.T) {
	env := peertest.Require(t)
	dir := t.TempDir()
	mailer := func(relay *mailroute.Relay) (*mailroute.Mailer, *spool.Store) {
		st := &spool.Store{Dir: dir}
		m, err := mailroute.New(mailroute.Config{
			Hostname: "mail.sender.test",
			Resolver: mailroute.DNSServer(env.DNS),
			Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Relayed}},
			Relay:    relay,
			Queue:    st,
			Retry:    mailroute.RetryPolicy{FirstRetry: time.Hour}, // the test flushes
		})
		if err != nil {
			t.Fatal(err)
		}
		return m, st
	}
	id := fmt.Sprintf("<requiretls-queued.%d@mailroute.test>", time.Now().UnixNano())
	const rcpt = "requiretls-queued@example.org"
	body := "From: a@sender.test\r\nTo: " + rcpt + "\r\nSubject: REQUIRETLS queued\r\nMessage-ID: " + id + "\r\n\r\nsecret\r\n"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	m, st := mailer(&mailroute.Relay{Addr: env.SubmissionAddr, Username: env.SmarthostUser, Password: env.SmarthostPass,
		TLSConfig: &tls.Config{RootCAs: env.CertPool(t), ServerName: "localhost"}})
	res, err := m.Send(mailroute.WithREQUIRETLS(ctx), "a@sender.test", []string{rcpt}, strings.NewReader(body))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if r := res.Recipients[0]; r.Status != mailroute.Queued || !errors.Is(r.Err, mailroute.ErrREQUIRETLS) {
		t.Fatalf("status %v, err %v; want Queued with ErrREQUIRETLS", r.Status, r.Err)
	}
	if err := m.Flush(ctx, ""); err != nil {
		t.Fatal(err)
	}
	list, err := m.QueueList(ctx)
	if err != nil || len(list) != 1 || !list[0].RequireTLS || list[0].Recipients[0].Attempts != 2 ||
		!strings.Contains(list[0].Recipients[0].LastError, "does not offer REQUIRETLS") {
		t.Fatalf("after the retry through Postfix the queue holds %+v (%v)", list, err)
	}
	m.Close()
	st.Close()

	m, st = mailer(&mailroute.Relay{Addr: env.MaddySubmissionAddr, Username: env.MaddyUser, Password: env.MaddyPass,
		TLSConfig: &tls.Config{RootCAs: env.MaddyCertPool(t)}})
	defer st.Close()
	defer m.Close()
	if list, err := m.QueueList(ctx); err != nil || len(list) != 1 || !list[0].RequireTLS {
		t.Fatalf("after the restart the queue holds %+v (%v), want the marked message", list, err)
	}
	if err := m.Flush(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if list, _ := m.QueueList(ctx); len(list) != 0 {
		t.Fatalf("still queued after the retry through maddy: %+v", list[0].Recipients)
	}
	got := env.WaitMaddy(t, env.MaddyStore, peertest.MaddyHeaderIs("Message-ID", id), 10*time.Second)
	if !got.HasRcpt(rcpt) {
		t.Errorf("maddy stored it for %v", got.To)
	}
	// Postfix never got it: the refusal came before MAIL.
	mails, err := peertest.ReadMaildir(env.PostfixMaildir)
	if err != nil {
		t.Fatal(err)
	}
	for _, pm := range mails {
		if pm.Header("Message-ID") == id {
			t.Errorf("Postfix, which does not offer REQUIRETLS, delivered it: %s", pm.Path)
		}
	}
}
