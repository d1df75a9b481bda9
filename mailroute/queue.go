package mailroute

import (
	"context"
	"io"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// QueueStore keeps deferred mail durably until it is delivered or given
// up. The Mailer drives it: it enqueues what Send could not deliver, leases
// what is due, attempts it, and records the outcome. Spool is the embedded
// store, in a directory; a store shared by several application instances
// (a database) implements the same interface.
//
// Implementations must be safe for concurrent use. Every method that
// returns nil must have made its change durable.
type QueueStore interface {
	// Enqueue stores a message, its recipients and its body, durably. It
	// assigns m.ID when empty.
	Enqueue(ctx context.Context, m *QueuedMessage, body io.Reader) error
	// Lease returns up to max messages having a recipient due at now
	// (NextAttempt not after it), and hides them from other Lease calls
	// until now+lease or until Update or Release.
	Lease(ctx context.Context, now time.Time, max int, lease time.Duration) ([]*QueuedMessage, error)
	// Body opens a queued message's body.
	Body(ctx context.Context, id string) (io.ReadCloser, error)
	// Update records the message as it is after an attempt, ending its
	// lease. A message without recipients is deleted with its body.
	Update(ctx context.Context, m *QueuedMessage) error
	// Release ends a lease without a change.
	Release(ctx context.Context, id string) error
	// List returns every queued message.
	List(ctx context.Context) ([]*QueuedMessage, error)
}

// QueuedMessage is a message waiting in the queue, with the recipients it
// still has to reach.
type QueuedMessage struct {
	ID         string
	From       string // the reverse-path; "" is the null sender
	Created    time.Time
	Recipients []QueuedRecipient
}

// QueuedRecipient is one recipient's place in the queue.
type QueuedRecipient struct {
	Rcpt string
	// Attempts counts every attempt so far; DirectAttempts the deferred
	// direct ones, which decide the fallback over time.
	Attempts, DirectAttempts int
	NextAttempt              time.Time
	Queued                   time.Time // when it entered the queue
	LastError                string
}

// RetryPolicy is the schedule of the queue. The zero value is the
// default: first retry after 5 minutes, then doubling with ±20% jitter up
// to 2 hours between attempts, giving up after 5 days, and trying the
// smarthost from the third attempt of a recipient direct delivery keeps
// deferring.
//
// Against the references: Postfix retries after 300 s, backs off to 4000
// s and gives up after 5 days; RFC 5321 §4.5.4.1 asks for at least 30
// minutes between retries and 4–5 days in all. The first retry here is
// Postfix's, sooner than the RFC's 30 minutes, because greylisting — the
// commonest deferral — usually clears after 5 to 15 minutes, and a
// password-reset mail that arrives half an hour late is a failure to its
// reader; the doubling reaches the RFC's spacing by the third retry, and
// the cap of 2 hours (above Postfix's 67 minutes) keeps a dead host from
// being hammered over the 5 days.
type RetryPolicy struct {
	FirstRetry  time.Duration // 0: 5 minutes
	MaxInterval time.Duration // 0: 2 hours
	MaxAge      time.Duration // 0: 5 days; then the recipient is given up
	Multiplier  float64       // 0: 2
	Jitter      float64       // randomisation factor, 0: 0.2; negative: none
	// FallbackAfter is how many deferred direct attempts a recipient gets
	// before the next attempt goes through the smarthost (graylisting that
	// never clears, a host that stays down). 0: 2; negative: never.
	FallbackAfter int
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.FirstRetry <= 0 {
		p.FirstRetry = 5 * time.Minute
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = 2 * time.Hour
	}
	if p.MaxAge <= 0 {
		p.MaxAge = 5 * 24 * time.Hour
	}
	if p.Multiplier <= 0 {
		p.Multiplier = 2
	}
	switch {
	case p.Jitter == 0:
		p.Jitter = 0.2
	case p.Jitter < 0:
		p.Jitter = 0
	}
	if p.FallbackAfter == 0 {
		p.FallbackAfter = 2
	}
	return p
}

// delay is the wait after a recipient's attempt number attempts (1 for the
// first), on github.com/cenkalti/backoff/v4's exponential schedule.
func (p RetryPolicy) delay(attempts int) time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     p.FirstRetry,
		RandomizationFactor: p.Jitter,
		Multiplier:          p.Multiplier,
		MaxInterval:         p.MaxInterval,
		MaxElapsedTime:      0, // the queue gives up by MaxAge itself
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	d := b.NextBackOff()
	for i := 1; i < attempts; i++ {
		d = b.NextBackOff()
	}
	return d
}

// EventKind is what happened to a recipient.
type EventKind uint8

const (
	// EventDelivered: a server accepted the message.
	EventDelivered EventKind = iota + 1
	// EventQueued: Send could not deliver it now; it is in the queue.
	EventQueued
	// EventDeferred: a queued attempt failed temporarily; NextAttempt says
	// when the next one is.
	EventDeferred
	// EventFailed: failed permanently; removed from the queue.
	EventFailed
	// EventGaveUp: still failing at RetryPolicy.MaxAge; removed.
	EventGaveUp
)

var eventNames = [...]string{"", "delivered", "queued", "deferred", "failed", "gave-up"}

// String returns "delivered", "queued", "deferred", "failed" or "gave-up".
func (k EventKind) String() string {
	if int(k) < len(eventNames) && k != 0 {
		return eventNames[k]
	}
	return "unknown"
}

// Event is one outcome of one attempt for one recipient, given to
// Config.OnEvent.
type Event struct {
	Kind        EventKind
	QueueID     string // "" for a Send's first attempt that did not queue
	Rcpt        string
	Route       Route
	Via         Via
	Fallback    bool // the smarthost was tried because direct failed
	Host        string
	TLS         TLSProtection // which TLS protected the attempt (RecipientResult.TLS)
	Attempt     int           // 1 for the first
	NextAttempt time.Time     // for EventQueued and EventDeferred
	Err         error
}
