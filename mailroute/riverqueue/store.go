package riverqueue

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailroute/go-mailroute/mailroute"
)

// Kind is the River job kind of a queued message.
const Kind = "mailroute_message"

// DefaultQueue is the River queue the store uses when Store.Queue is empty.
const DefaultQueue = "mailroute"

// DefaultMaxBodySize is the largest body stored when Store.MaxBodySize is 0.
const DefaultMaxBodySize = 64 << 20

// riverNotifyCooldown is the insert-only River client's FetchCooldown.
const riverNotifyCooldown = 24 * time.Hour

// jobMaxAttempts is River's max_attempts of the jobs. River never works
// them (the Mailer does, on its RetryPolicy, which decides when to give up),
// so it only has to stay out of the way of River's own bookkeeping.
const jobMaxAttempts = 10000

var (
	// ErrNotFound: no message with that ID is queued.
	ErrNotFound = errors.New("riverqueue: no such message")
	// ErrLeaseLost: Update or Quarantine came from a lease that ran out and
	// was granted again, to this instance or another, or was already ended;
	// nothing was recorded. It is mailroute.ErrLeaseLost.
	ErrLeaseLost = mailroute.ErrLeaseLost
	// ErrTooLarge: the body is larger than Store.MaxBodySize.
	ErrTooLarge = errors.New("riverqueue: message body too large")

	errNoPool = errors.New("riverqueue: Store.Pool is nil")
)

// Store is a mailroute.QueueStore in PostgreSQL, through River. Set Pool;
// the other fields have usable zero values. Call Migrate once before use.
// Safe for concurrent use, by any number of Mailers and instances: leases
// and their tokens live in the database.
type Store struct {
	// Pool is the database. Required.
	Pool *pgxpool.Pool
	// Queue is the River queue of the jobs. "": DefaultQueue. Stores on
	// different queues of one database do not see each other's mail.
	Queue string
	// MaxBodySize is the largest body stored, in octets. 0:
	// DefaultMaxBodySize (64 MiB); PostgreSQL's limit is 1 GiB.
	MaxBodySize int64
	// LeaseTimeout, when positive, replaces the lease duration the Mailer
	// asks for (45 minutes, longer than any attempt can take): how long a
	// message leased by an instance that died waits before another takes
	// it. The Mailer stops its attempts before the lease it was granted
	// ends, so a short one only makes long attempts end sooner. 0: as
	// asked.
	LeaseTimeout time.Duration
	// ClientID names this instance in River's attempted_by and in the
	// message's leased_by. "": host name, process ID and a random suffix.
	ClientID string
	// Logger receives River's log lines (migrations) and the failures of
	// the sweep of expired state rows. nil: none.
	Logger *slog.Logger

	bodies   bodyCache
	outcomes outcomeBatcher

	sweepMu   sync.Mutex // guards the two below (stategc.go)
	sweeping  bool       // a sweep of expired state rows is running
	sweepLast time.Time  // when the last one started

	notifyMu    sync.Mutex
	notifying   bool // a caller is sending notifyCommitted's notification
	notifyAgain bool // and is to send one more when it is done

	once   sync.Once
	client *river.Client[pgx.Tx]
	id     string
	err    error
}

var _ mailroute.QueueStore = (*Store)(nil)

// messageArgs are the job's River args: a summary for River's UI and
// tools. The message itself is in mailroute_message.
type messageArgs struct {
	From       string `json:"from"`
	Recipients int    `json:"recipients"`
}

func (messageArgs) Kind() string { return Kind }

func (s *Store) init() error {
	s.once.Do(func() {
		if s.Pool == nil {
			s.err = errNoPool
			return
		}
		// An insert-only River client: no queues, no workers, nothing
		// started. River inserts the jobs; the Mailer works them.
		//
		// FetchCooldown also spaces River's own insert notifications
		// (one a queue per cooldown). The store sends its own for every
		// commit of due mail (see Notify), so River's would only add a
		// statement to an insert and, in the store's own transactions,
		// hold PostgreSQL's notification lock through their commit:
		// a day's cooldown leaves one a day. The client fetches nothing,
		// so the cooldown has no other effect.
		s.client, s.err = river.NewClient(riverpgxv5.New(s.Pool), &river.Config{
			Logger:            s.logger(),
			FetchCooldown:     riverNotifyCooldown,
			FetchPollInterval: riverNotifyCooldown,
		})
		s.id = s.ClientID
		if s.id == "" {
			host, _ := os.Hostname()
			var b [3]byte
			rand.Read(b[:])
			s.id = fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
		}
	})
	return s.err
}

func (s *Store) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Store) queue() string {
	if s.Queue != "" {
		return s.Queue
	}
	return DefaultQueue
}

func (s *Store) maxBody() int64 {
	if s.MaxBodySize > 0 {
		return s.MaxBodySize
	}
	return DefaultMaxBodySize
}

// txKey carries the application's transaction to Enqueue.
type txKey struct{}

// WithTx returns a context under which the Store's Enqueue inserts into
// tx instead of committing on its own: the message is queued when tx
// commits and never exists if it rolls back. Pass it to the Mailer's
// Enqueue, which checks and prepares the message exactly as Send does:
//
//	id, err := mailer.Enqueue(riverqueue.WithTx(ctx, tx), from, to, msg)
//
// The Mailer's Config.Queue must be a *Store on tx's database; any other
// store ignores the transaction. Do not pass it to Send, which delivers
// before the transaction commits.
func WithTx(ctx context.Context, tx pgx.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// Enqueue implements mailroute.QueueStore: the message's River job and its
// row are inserted in one transaction, the caller's when ctx comes from
// WithTx. It assigns m.ID (the job's ID) when empty.
func (s *Store) Enqueue(ctx context.Context, m *mailroute.QueuedMessage, body io.Reader) error {
	if err := s.init(); err != nil {
		return err
	}
	if tx, ok := ctx.Value(txKey{}).(pgx.Tx); ok && tx != nil {
		_, err := s.enqueueTx(ctx, tx, m, body, true)
		return err
	}
	var due bool
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) (err error) {
		due, err = s.enqueueTx(ctx, tx, m, body, false)
		return err
	})
	if err == nil && due {
		s.notifyCommitted(ctx)
	}
	return err
}

// EnqueueMessageTx stores a prepared message in the caller's transaction:
// it is queued when tx commits. m's recipients and times are stored as
// given (see mailroute.QueuedMessage); body must already be canonical
// (CRLF line endings, as mailroute's Mailer produces). It assigns m.ID
// when empty.
func (s *Store) EnqueueMessageTx(ctx context.Context, tx pgx.Tx, m *mailroute.QueuedMessage, body io.Reader) error {
	if err := s.init(); err != nil {
		return err
	}
	_, err := s.enqueueTx(ctx, tx, m, body, true)
	return err
}

// enqueueTx inserts the job and the row in tx and reports whether the
// message is due now. notify sends the notification in tx, delivered at
// its commit: for the caller's transactions, whose commit the store does
// not see. The store's own transactions notify after they commit instead
// (notifyCommitted), because a transaction that notifies holds
// PostgreSQL's notification lock through its commit, which makes
// concurrent committers flush the log one after the other (measured: 8
// callers of Enqueue went from 700 to 400 msgs/s).
func (s *Store) enqueueTx(ctx context.Context, tx pgx.Tx, m *mailroute.QueuedMessage, body io.Reader, notify bool) (due bool, err error) {
	if len(m.Recipients) == 0 {
		return false, errors.New("riverqueue: message has no recipients")
	}
	if body == nil {
		return false, errors.New("riverqueue: message has no body")
	}
	data, err := io.ReadAll(io.LimitReader(body, s.maxBody()+1))
	if err != nil {
		return false, fmt.Errorf("riverqueue: reading the body: %w", err)
	}
	if int64(len(data)) > s.maxBody() {
		return false, fmt.Errorf("%w: over %d octets (Store.MaxBodySize)", ErrTooLarge, s.maxBody())
	}
	rcpts, next, err := encodeRecipients(m.Recipients)
	if err != nil {
		return false, err
	}
	res, err := s.client.InsertTx(ctx, tx, messageArgs{From: m.From, Recipients: len(m.Recipients)}, &river.InsertOpts{
		Queue:       s.queue(),
		ScheduledAt: next,
		MaxAttempts: jobMaxAttempts,
	})
	if err != nil {
		return false, fmt.Errorf("riverqueue: inserting the job: %w", schemaHint(err))
	}
	id := m.ID
	if id == "" {
		id = strconv.FormatInt(res.Job.ID, 10)
	}
	created := m.Created
	if created.IsZero() {
		created = time.Now()
	}
	if next.IsZero() {
		next = res.Job.ScheduledAt
	}
	due = !next.After(time.Now())
	// The row and, when asked for mail due now, the notification that
	// wakes the instances' Notify at commit, in one statement (River's own
	// comes once a day: see riverNotifyCooldown).
	_, err = tx.Exec(ctx, `WITH ins AS (INSERT INTO mailroute_message
		(id, job_id, sender, created_at, recipients, next_attempt, body_size, body, require_tls)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $11) RETURNING 1)
		SELECT pg_notify(current_schema() || '.`+insertTopic+`', $9::text)
		FROM ins WHERE $10::boolean`,
		id, res.Job.ID, m.From, created, rcpts, next, len(data), data, insertPayload(s.queue()), notify && due, m.RequireTLS)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
			return false, fmt.Errorf("riverqueue: message %s is already queued", id)
		}
		return false, fmt.Errorf("riverqueue: inserting the message: %w", schemaHint(err))
	}
	m.ID = id
	return due, nil
}

// Body implements mailroute.QueueStore. The body is read whole; one that
// came with the message's lease (up to 256 KiB) is not read again.
func (s *Store) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := s.init(); err != nil {
		return nil, err
	}
	if b, ok := s.bodies.take(id); ok {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	var b []byte
	err := s.Pool.QueryRow(ctx, `SELECT body FROM mailroute_message WHERE id = $1`, id).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("riverqueue: body of %s: %w", id, schemaHint(err))
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// List implements mailroute.QueueStore: every message of the store's
// queue, leased or not, oldest first.
func (s *Store) List(ctx context.Context) ([]*mailroute.QueuedMessage, error) {
	if err := s.init(); err != nil {
		return nil, err
	}
	rows, err := s.Pool.Query(ctx, `SELECT m.id, m.sender, m.created_at, m.recipients, m.require_tls
		FROM mailroute_message m JOIN river_job j ON j.id = m.job_id
		WHERE j.queue = $1 AND j.state <> 'discarded' ORDER BY m.created_at, m.job_id`, s.queue())
	if err != nil {
		return nil, fmt.Errorf("riverqueue: list: %w", schemaHint(err))
	}
	var out []*mailroute.QueuedMessage
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("riverqueue: list: %w", err)
	}
	return out, nil
}

// recipient is a mailroute.QueuedRecipient in mailroute_message.recipients.
type recipient struct {
	Rcpt           string    `json:"rcpt"`
	Attempts       int       `json:"attempts,omitempty"`
	DirectAttempts int       `json:"direct_attempts,omitempty"`
	NextAttempt    time.Time `json:"next_attempt"`
	Queued         time.Time `json:"queued"`
	LastError      string    `json:"last_error,omitempty"`
}

// encodeRecipients returns the JSON of the recipients and the earliest
// next attempt.
func encodeRecipients(rs []mailroute.QueuedRecipient) ([]byte, time.Time, error) {
	out := make([]recipient, len(rs))
	var next time.Time
	for i, r := range rs {
		out[i] = recipient{Rcpt: r.Rcpt, Attempts: r.Attempts, DirectAttempts: r.DirectAttempts,
			NextAttempt: r.NextAttempt, Queued: r.Queued, LastError: r.LastError}
		if i == 0 || r.NextAttempt.Before(next) {
			next = r.NextAttempt
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("riverqueue: encoding the recipients: %w", err)
	}
	return b, next, nil
}

func decodeRecipients(b []byte) ([]mailroute.QueuedRecipient, error) {
	var in []recipient
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("riverqueue: decoding the recipients: %w", err)
	}
	out := make([]mailroute.QueuedRecipient, len(in))
	for i, r := range in {
		out[i] = mailroute.QueuedRecipient{Rcpt: r.Rcpt, Attempts: r.Attempts, DirectAttempts: r.DirectAttempts,
			NextAttempt: r.NextAttempt, Queued: r.Queued, LastError: r.LastError}
	}
	return out, nil
}

// scanMessage reads id, sender, created_at, recipients, require_tls.
func scanMessage(row pgx.Row) (*mailroute.QueuedMessage, error) {
	var (
		m     mailroute.QueuedMessage
		rcpts []byte
	)
	if err := row.Scan(&m.ID, &m.From, &m.Created, &rcpts, &m.RequireTLS); err != nil {
		return nil, fmt.Errorf("riverqueue: %w", err)
	}
	var err error
	m.Recipients, err = decodeRecipients(rcpts)
	return &m, err
}
