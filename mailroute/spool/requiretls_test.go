package spool_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// A REQUIRETLS message deferred by a verified relay that does not offer
// REQUIRETLS is queued in the directory with the mark; its retry there
// stays deferred without a MAIL command; after a restart on the same
// directory, with a relay that offers REQUIRETLS, it is delivered with the
// REQUIRETLS MAIL parameter.
func TestREQUIRETLSSurvivesRestart(t *testing.T) {
	ca := testpki.New(t)
	var mails atomic.Int64
	without := smtptest.Start(t, smtptest.Options{TLS: ca.ServerConfig("127.0.0.1"),
		MailPolicy: func(string) *smtp.SMTPError { mails.Add(1); return nil }})
	with := smtptest.Start(t, smtptest.Options{TLS: ca.ServerConfig("127.0.0.1"), EnableREQUIRETLS: true})
	dir := t.TempDir()
	mailer := func(relay *smtptest.Server) (*mailroute.Mailer, *spool.Store) {
		st := &spool.Store{Dir: dir, NoSync: true}
		m, err := mailroute.New(mailroute.Config{
			Hostname: "client.test",
			Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Relayed}},
			Relay:    &mailroute.Relay{Addr: relay.Addr, TLSConfig: &tls.Config{RootCAs: ca.Pool()}},
			Queue:    st,
			Retry:    mailroute.RetryPolicy{FirstRetry: time.Hour}, // the test flushes
		})
		if err != nil {
			t.Fatal(err)
		}
		return m, st
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	m, st := mailer(without)
	res, err := m.Send(mailroute.WithREQUIRETLS(ctx), "a@sender.test", []string{"secret@dest.test"}, strings.NewReader(testBody))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if r := wantStatus(t, res, "secret@dest.test", mailroute.Queued); !errors.Is(r.Err, mailroute.ErrREQUIRETLS) {
		t.Errorf("err %v, want ErrREQUIRETLS", r.Err)
	}
	if err := m.Flush(ctx, ""); err != nil {
		t.Fatal(err)
	}
	list, err := m.QueueList(ctx)
	if err != nil || len(list) != 1 || !list[0].RequireTLS || list[0].Recipients[0].Attempts != 2 {
		t.Fatalf("after the retry the queue holds %+v (%v), want the message, marked, tried twice", list, err)
	}
	if mails.Load() != 0 || len(without.Attempts()) != 0 {
		t.Fatalf("the relay without REQUIRETLS got %d MAIL commands", mails.Load())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	m, st = mailer(with) // the restart
	defer st.Close()
	defer m.Close()
	if list, err := m.QueueList(ctx); err != nil || len(list) != 1 || !list[0].RequireTLS {
		t.Fatalf("after the restart the queue holds %+v (%v), want the marked message", list, err)
	}
	if err := m.Flush(ctx, ""); err != nil {
		t.Fatal(err)
	}
	got := with.Messages()
	if len(got) != 1 || got[0].Rcpts[0] != "secret@dest.test" || !got[0].MailOpts.RequireTLS {
		t.Fatalf("the relay offering REQUIRETLS received %d messages (want 1, with the REQUIRETLS parameter)", len(got))
	}
	if list, _ := m.QueueList(ctx); len(list) != 0 {
		t.Errorf("%d messages still queued", len(list))
	}
}
