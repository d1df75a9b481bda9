package riverqueue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/mailroute/go-mailroute/mailroute"
)

// BatchMessage is one message of EnqueueBatch: a prepared message and its
// canonical body, as the Mailer hands them to QueueStore.Enqueue.
type BatchMessage struct {
	Message *mailroute.QueuedMessage
	Body    io.Reader
}

// notifySQL sends the insert notification River listeners and Notify
// wait for, delivered when the transaction commits. $1 is River's own
// payload (insertPayload): PostgreSQL folds identical notifications of a
// transaction into one, so this one and River's arrive once.
const notifySQL = `SELECT pg_notify(current_schema() || '.` + insertTopic + `', $1::text)`

// EnqueueBatch queues many prepared messages in one transaction — the
// caller's when ctx comes from WithTx, else its own — all or none: their
// River jobs in one statement (River's InsertManyTx), their rows in one
// COPY, and one notification at commit for Notify. It is Enqueue for
// many messages at once (a newsletter, an import): a few round trips and
// one commit instead of one transaction each. Each message's recipients
// and times are stored as given and its body must be canonical (see
// EnqueueMessageTx); each message without an ID gets its job's ID. Every
// message is checked (recipients, body, Store.MaxBodySize) before anything
// is written; an error names the message by its index.
func (s *Store) EnqueueBatch(ctx context.Context, batch []BatchMessage) error {
	if err := s.init(); err != nil {
		return err
	}
	if len(batch) == 0 {
		return nil
	}
	if tx, ok := ctx.Value(txKey{}).(pgx.Tx); ok && tx != nil {
		_, err := s.enqueueBatchTx(ctx, tx, batch, true)
		return err
	}
	var due bool
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) (err error) {
		due, err = s.enqueueBatchTx(ctx, tx, batch, false)
		return err
	})
	if err == nil && due {
		s.notifyCommitted(ctx)
	}
	return err
}

// enqueueBatchTx is enqueueTx for a batch.
func (s *Store) enqueueBatchTx(ctx context.Context, tx pgx.Tx, batch []BatchMessage, notify bool) (due bool, err error) {
	type row struct {
		rcpts []byte
		next  time.Time
		body  []byte
	}
	rows := make([]row, len(batch))
	params := make([]river.InsertManyParams, len(batch))
	now := time.Now()
	for i, b := range batch {
		m := b.Message
		if m == nil || len(m.Recipients) == 0 {
			return false, fmt.Errorf("riverqueue: batch message %d has no recipients", i)
		}
		if b.Body == nil {
			return false, fmt.Errorf("riverqueue: batch message %d has no body", i)
		}
		data, err := io.ReadAll(io.LimitReader(b.Body, s.maxBody()+1))
		if err != nil {
			return false, fmt.Errorf("riverqueue: batch message %d: reading the body: %w", i, err)
		}
		if int64(len(data)) > s.maxBody() {
			return false, fmt.Errorf("%w: batch message %d is over %d octets (Store.MaxBodySize)", ErrTooLarge, i, s.maxBody())
		}
		rcpts, next, err := encodeRecipients(m.Recipients)
		if err != nil {
			return false, err
		}
		if next.IsZero() {
			next = now
		}
		if !next.After(now) {
			due = true
		}
		rows[i] = row{rcpts: rcpts, next: next, body: data}
		params[i] = river.InsertManyParams{
			Args:       messageArgs{From: m.From, Recipients: len(m.Recipients)},
			InsertOpts: &river.InsertOpts{Queue: s.queue(), ScheduledAt: next, MaxAttempts: jobMaxAttempts},
		}
	}
	res, err := s.client.InsertManyTx(ctx, tx, params)
	if err != nil {
		return false, fmt.Errorf("riverqueue: inserting the jobs: %w", schemaHint(err))
	}
	if len(res) != len(batch) {
		return false, fmt.Errorf("riverqueue: River inserted %d jobs for %d messages", len(res), len(batch))
	}
	ids := make([]string, len(batch))
	seen := make(map[string]int, len(batch))
	copyRows := make([][]any, len(batch))
	for i, b := range batch {
		m, job := b.Message, res[i].Job
		// River returns the jobs in the order given; a job whose
		// kind or queue is not this message's would link a row to
		// another's job, so the batch stops rather than guess.
		if job.Kind != Kind || job.Queue != s.queue() {
			return false, fmt.Errorf("riverqueue: River returned job %d (%s, %s) for batch message %d", job.ID, job.Kind, job.Queue, i)
		}
		ids[i] = m.ID
		if ids[i] == "" {
			ids[i] = strconv.FormatInt(job.ID, 10)
		}
		if j, dup := seen[ids[i]]; dup {
			return false, fmt.Errorf("riverqueue: batch messages %d and %d have the same ID %s", j, i, ids[i])
		}
		seen[ids[i]] = i
		created := m.Created
		if created.IsZero() {
			created = now
		}
		r := rows[i]
		copyRows[i] = []any{ids[i], job.ID, m.From, created, r.rcpts, r.next, int64(len(r.body)), r.body, m.RequireTLS}
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"mailroute_message"},
		[]string{"id", "job_id", "sender", "created_at", "recipients", "next_attempt", "body_size", "body", "require_tls"},
		pgx.CopyFromRows(copyRows))
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
			return false, fmt.Errorf("riverqueue: a message of the batch is already queued: %s", pe.Detail)
		}
		return false, fmt.Errorf("riverqueue: inserting the messages: %w", schemaHint(err))
	}
	if due && notify {
		if _, err := tx.Exec(ctx, notifySQL, insertPayload(s.queue())); err != nil {
			return false, fmt.Errorf("riverqueue: notifying: %w", err)
		}
	}
	for i, b := range batch {
		b.Message.ID = ids[i]
	}
	return due, nil
}
