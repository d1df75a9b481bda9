package spool_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	"github.com/mailroute/go-mailroute/internal/spool"
)

// The queue's cycle: store what could not be delivered, lease what is due,
// read the body, record the outcome.
func Example() {
	dir, _ := os.MkdirTemp("", "spool")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

	s, err := spool.Open(dir, spool.Options{})
	if err != nil {
		log.Fatal(err)
	}
	m := &spool.Message{
		ID:      "example",
		From:    "sender@example.org",
		Created: now,
		Recipients: []spool.Recipient{
			{Rcpt: "a@example.com", NextAttempt: now, Queued: now},
			{Rcpt: "b@example.net", NextAttempt: now, Queued: now},
		},
		Meta: map[string]string{"message-id": "<1@example.org>"}, // the same on every retry
	}
	if err := s.Enqueue(ctx, m, strings.NewReader("Subject: hi\r\n\r\nhello\r\n")); err != nil {
		log.Fatal(err) // not stored: Send reports these recipients as failed
	}

	due, _ := s.Lease(ctx, now, 10, 5*time.Minute)
	for _, m := range due {
		body, _ := s.Body(ctx, m.ID)
		b, _ := io.ReadAll(body)
		body.Close()
		fmt.Printf("%s: %d bytes to %d recipients\n", m.ID, len(b), len(m.Recipients))

		// a@ delivered, b@ deferred for 10 minutes.
		m.Recipients = m.Recipients[1:]
		m.Recipients[0].Attempts++
		m.Recipients[0].LastError = "451 4.7.1 greylisted"
		m.Recipients[0].NextAttempt = now.Add(10 * time.Minute)
		if err := s.Update(ctx, m); err != nil {
			log.Print(err)
		}
	}
	s.Close()

	// After a restart the deferred recipient is still there.
	s, _ = spool.Open(dir, spool.Options{})
	defer s.Close()
	queued, _ := s.List(ctx)
	for _, m := range queued {
		fmt.Println(m.ID, m.Recipients[0].Rcpt, m.Recipients[0].LastError, m.Meta["message-id"])
	}
	// Output:
	// example: 22 bytes to 2 recipients
	// example b@example.net 451 4.7.1 greylisted <1@example.org>
}
