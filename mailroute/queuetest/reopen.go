package queuetest

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
)

// RunReopen checks what a durable store keeps across a restart, through a
// real Mailer: first is an empty store, and reopen returns a new store
// value on the same storage, as a restarted process would hold it (it
// closes the previous value first where the store needs that).
//
// A message marked with mailroute.WithREQUIRETLS, deferred by a verified
// relay that does not offer REQUIRETLS, is queued with its mark; its retry
// there stays deferred without a MAIL command; after the restart, with a
// relay that offers REQUIRETLS, it is delivered with the REQUIRETLS MAIL
// parameter, and the queue is empty.
func RunReopen(t *testing.T, first mailroute.QueueStore, reopen func() mailroute.QueueStore) {
	t.Run("REQUIRETLSSurvivesRestart", func(t *testing.T) { testREQUIRETLSRestart(t, first, reopen) })
}

func testREQUIRETLSRestart(t *testing.T, first mailroute.QueueStore, reopen func() mailroute.QueueStore) {
	ca := testpki.New(t)
	var mails atomic.Int64
	without := smtptest.Start(t, smtptest.Options{TLS: ca.ServerConfig("127.0.0.1"),
		MailPolicy: func(string) *smtp.SMTPError { mails.Add(1); return nil }})
	with := smtptest.Start(t, smtptest.Options{TLS: ca.ServerConfig("127.0.0.1"), EnableREQUIRETLS: true})
	mailer := func(relay *smtptest.Server, store mailroute.QueueStore) *mailroute.Mailer {
		m, err := mailroute.New(mailroute.Config{
			Hostname: "client.test",
			Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Relayed}},
			Relay:    &mailroute.Relay{Addr: relay.Addr, TLSConfig: &tls.Config{RootCAs: ca.Pool()}},
			Queue:    store,
			Retry:    mailroute.RetryPolicy{FirstRetry: time.Hour}, // the test flushes
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const rcpt = "requiretls-restart@dest.test"
	body := "From: a@sender.test\r\nTo: " + rcpt + "\r\nSubject: secret\r\n\r\nbody\r\n"

	m := mailer(without, first)
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
	if err != nil || len(list) != 1 || !list[0].RequireTLS || list[0].Recipients[0].Attempts != 2 {
		t.Fatalf("after the retry the queue holds %+v (%v), want the message, marked, tried twice", list, err)
	}
	if mails.Load() != 0 || len(without.Attempts()) != 0 {
		t.Fatalf("the relay without REQUIRETLS got %d MAIL commands", mails.Load())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m = mailer(with, reopen()) // the restart
	defer m.Close()
	if list, err := m.QueueList(ctx); err != nil || len(list) != 1 || !list[0].RequireTLS {
		t.Fatalf("after the restart the queue holds %+v (%v), want the marked message", list, err)
	}
	if err := m.Flush(ctx, ""); err != nil {
		t.Fatal(err)
	}
	got := with.Messages()
	if len(got) != 1 || got[0].Rcpts[0] != rcpt || !got[0].MailOpts.RequireTLS {
		t.Fatalf("the relay offering REQUIRETLS received %d messages (want 1, with the REQUIRETLS parameter)", len(got))
	}
	if list, _ := m.QueueList(ctx); len(list) != 0 {
		t.Errorf("%d messages still queued", len(list))
	}
}
