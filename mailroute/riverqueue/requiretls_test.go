package riverqueue_test

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
	"github.com/mailroute/go-mailroute/mailroute/queuetest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// marks returns each listed message's RequireTLS by its first recipient.
func marks(t *testing.T, s mailroute.QueueStore) map[string]bool {
	t.Helper()
	list, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]bool, len(list))
	for _, m := range list {
		out[m.Recipients[0].Rcpt] = m.RequireTLS
	}
	return out
}

// EnqueueBatch stores each message's mark, and a database migrated before
// the mark existed keeps its messages, unmarked, through Migrate.
func TestREQUIRETLSBatchAndMigration(t *testing.T) {
	s, pool := newStore(t)
	ctx := context.Background()
	batch := batchOf(3, "b", queuetest.T0)
	batch[1].Message.RequireTLS = true
	if err := s.EnqueueBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := marks(t, s); len(got) != 3 || got["b0@dest.test"] || !got["b1@dest.test"] || got["b2@dest.test"] {
		t.Fatalf("marks after EnqueueBatch: %v", got)
	}

	// Back to the schema of version 4, with the unmarked messages in it,
	// as a database queued by the version before the mark; then upgrade.
	if _, err := pool.Exec(ctx, `DELETE FROM river_job WHERE id = (SELECT job_id FROM mailroute_message WHERE require_tls);
		ALTER TABLE mailroute_message DROP COLUMN require_tls;
		DELETE FROM mailroute_migration WHERE version = 5`); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if got := marks(t, s); len(got) != 2 || got["b0@dest.test"] || got["b2@dest.test"] {
		t.Fatalf("marks after the upgrade: %v, want b0 and b2 unmarked", got)
	}
	msgs, err := s.Lease(ctx, mailroute.LeaseRequest{Now: queuetest.T0, Max: 10, Duration: time.Minute})
	if err != nil || len(msgs) != 2 || msgs[0].RequireTLS || msgs[1].RequireTLS {
		t.Fatalf("leased %d (%v) after the upgrade", len(msgs), err)
	}
}

// A REQUIRETLS message deferred by a verified relay that does not offer
// REQUIRETLS is queued in PostgreSQL with the mark; its retry there stays
// deferred without a MAIL command; after a restart (a new Store and Mailer
// on the database), with a relay that offers REQUIRETLS, it is delivered
// with the REQUIRETLS MAIL parameter.
func TestREQUIRETLSSurvivesRestart(t *testing.T) {
	_, pool := newStore(t)
	ca := testpki.New(t)
	var mails atomic.Int64
	without := smtptest.Start(t, smtptest.Options{TLS: ca.ServerConfig("127.0.0.1"),
		MailPolicy: func(string) *smtp.SMTPError { mails.Add(1); return nil }})
	with := smtptest.Start(t, smtptest.Options{TLS: ca.ServerConfig("127.0.0.1"), EnableREQUIRETLS: true})
	mailer := func(relay *smtptest.Server) *mailroute.Mailer {
		m, err := mailroute.New(mailroute.Config{
			Hostname: "client.test",
			Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Relayed}},
			Relay:    &mailroute.Relay{Addr: relay.Addr, TLSConfig: &tls.Config{RootCAs: ca.Pool()}},
			Queue:    &riverqueue.Store{Pool: pool},
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

	m := mailer(without)
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

	m = mailer(with) // the restart
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
