package riverqueue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailroute/go-mailroute/internal/message"
	"github.com/mailroute/go-mailroute/mailroute"
)

// EnqueueTx queues a message inside the application's transaction tx, to
// every recipient at once: it is due when tx commits, and never exists if
// tx rolls back (the outbox pattern, with River's InsertTx). The addresses
// are checked and the body canonicalised as by the Mailer's Send (RFC 5321
// paths, CRLF line endings, no bare CR or LF, duplicates removed), and the
// body is limited to Store.MaxBodySize.
//
// It does not add Date or Message-ID nor sign with DKIM: that takes a
// Mailer's configuration, and it queues without the REQUIRETLS mark. With
// a Mailer at hand, prefer mailer.Enqueue(WithTx(ctx, tx), from, to, msg),
// which does everything Send does and keeps the mark of a ctx from
// mailroute.WithREQUIRETLS; EnqueueMessageTx stores
// QueuedMessage.RequireTLS as given.
func (s *Store) EnqueueTx(ctx context.Context, tx pgx.Tx, from string, to []string, msg io.Reader) (id string, err error) {
	if err := s.init(); err != nil {
		return "", err
	}
	// STAND-IN for the core helper this needs (see the package's report:
	// an exported mailroute.PrepareMessage): the same checks as the
	// Mailer's parseEnvelope and readBody, through the same internal
	// package, without the Mailer's header completion and DKIM.
	sender, null, err := message.ParseReversePath(from)
	if err != nil {
		return "", fmt.Errorf("mailroute: sender: %w", err)
	}
	if len(to) == 0 {
		return "", errors.New("mailroute: no recipients")
	}
	if msg == nil {
		return "", errors.New("mailroute: nil message")
	}
	now := time.Now()
	qm := &mailroute.QueuedMessage{From: sender.String(), Created: now}
	if null {
		qm.From = ""
	}
	seen := make(map[string]bool, len(to))
	for _, t := range to {
		a, err := message.ParseAddress(t)
		if err != nil {
			return "", fmt.Errorf("mailroute: recipient: %w", err)
		}
		if k := a.String(); !seen[k] {
			seen[k] = true
			qm.Recipients = append(qm.Recipients, mailroute.QueuedRecipient{Rcpt: k, Queued: now, NextAttempt: now})
		}
	}
	body, err := message.NewBody(msg, message.BodyOptions{MaxSize: s.maxBody()})
	if err != nil {
		return "", fmt.Errorf("mailroute: message: %w", err)
	}
	defer body.Close()
	if _, err := s.enqueueTx(ctx, tx, qm, body.Reader(), true); err != nil {
		return "", err
	}
	return qm.ID, nil
}
