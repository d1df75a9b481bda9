package riverqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailroute/go-mailroute/mailroute"
)

// insertTopic is the topic of River's insert notifications: River sends
// one, in the inserting transaction, on the channel "<schema>.river_insert"
// with the payload {"queue": "<queue>"}, so it is delivered when the
// transaction commits and never when it rolls back.
const insertTopic = "river_insert"

// notifyRetry is how long Notify waits before connecting again after its
// connection failed; the Mailer's poll covers the gap.
const notifyRetry = time.Second

// notifyTimeout bounds the notification sent after a commit: the mail is
// queued by then, and an Enqueue must not hang on what only makes it
// start sooner.
const notifyTimeout = 5 * time.Second

var _ mailroute.QueueNotifier = (*Store)(nil)

// Notify implements mailroute.QueueNotifier: it listens on a connection of
// its own (outside Pool, with Pool's configuration) to River's insert
// notifications for the store's queue, and calls wake for each, until ctx
// ends. Every Enqueue, EnqueueTx and EnqueueBatch of mail due now sends
// one when its transaction commits, whichever instance or process made it,
// so a Mailer on this Store starts new mail within milliseconds of the
// commit instead of at its next poll of the queue. A lost connection is
// made again after a second.
func (s *Store) Notify(ctx context.Context, wake func()) {
	if s.Pool == nil {
		return
	}
	for ctx.Err() == nil {
		err := s.listen(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		s.logger().Warn("riverqueue: notifications lost; reconnecting", "error", err)
		t := time.NewTimer(notifyRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// listen runs one listening connection until it fails or ctx ends.
func (s *Store) listen(ctx context.Context, wake func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.Pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// River names the channel after the schema it inserts into, the
	// connection's current_schema() (Pool's search_path).
	var channel string
	if err := conn.QueryRow(ctx, `SELECT current_schema() || '.' || $1::text`, insertTopic).Scan(&channel); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	// Mail committed before LISTEN took effect sent its notification to
	// nobody: look once.
	wake()
	queue := s.queue()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var p struct {
			Queue string `json:"queue"`
		}
		if json.Unmarshal([]byte(n.Payload), &p) == nil && p.Queue == queue {
			wake()
		}
	}
}

// notifyCommitted sends the notification for mail the store's own
// transaction has just committed, in a statement of its own. PostgreSQL
// writes no log for a transaction that only notifies, so it waits for no
// flush. Concurrent callers share one: a caller that finds one being sent
// leaves it to the sender to send another once that one is done, so every
// commit is followed by a notification sent after it. A failure is only
// logged: the mail is queued, and the Mailers' poll finds it.
func (s *Store) notifyCommitted(ctx context.Context) {
	s.notifyMu.Lock()
	if s.notifying {
		s.notifyAgain = true
		s.notifyMu.Unlock()
		return
	}
	s.notifying = true
	s.notifyMu.Unlock()
	for {
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
		_, err := s.Pool.Exec(nctx, notifySQL, insertPayload(s.queue()))
		cancel()
		if err != nil {
			s.logger().Warn("riverqueue: notifying the instances", "error", err)
		}
		s.notifyMu.Lock()
		if !s.notifyAgain {
			s.notifying = false
			s.notifyMu.Unlock()
			return
		}
		s.notifyAgain = false
		s.notifyMu.Unlock()
	}
}

// insertPayload is River's insert notification payload for queue, byte
// for byte (River formats it with %q).
func insertPayload(queue string) string { return fmt.Sprintf("{\"queue\": %q}", queue) }
