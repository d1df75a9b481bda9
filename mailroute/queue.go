package mailroute

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// QueueStore keeps deferred mail durably until it is delivered or given
// up. The Mailer drives it: it enqueues what Send could not deliver, leases
// what is due, attempts it, and records the outcome. The package
// github.com/mailroute/go-mailroute/mailroute/spool is the embedded store,
// in a directory; github.com/mailroute/go-mailroute/mailroute/riverqueue
// keeps it in PostgreSQL for several application instances. The package
// github.com/mailroute/go-mailroute/mailroute/queuetest holds every store to
// this contract.
//
// Implementations must be safe for concurrent use. Every method that
// returns nil must have made its change durable. A store may also
// implement StateStore, to keep what the Mailer learns beside the queue,
// QuarantineReporter, when it sets damaged entries aside on its own, and
// QueueNotifier, when it can tell the Mailer at once of mail that another
// instance enqueued; the Mailer finds them by type assertion.
//
// # Leases
//
// A message is attempted only under a lease, and a store grants at most
// one lease on a message at a time: not to two workers, not to a Flush
// while a worker holds it, not to two instances sharing the store. A
// lease ends with Update, Release or Quarantine by its holder, or when its
// time runs out; only then can Lease hand the message out again, with a new
// token. Every copy Lease returns carries its lease's token
// (QueuedMessage.Lease), and Update, Release and Quarantine act only when
// they present the current one: a holder whose lease ran out and was taken
// over — in the same process or in another instance — changes nothing and
// gets ErrLeaseLost, so it can never overwrite the newer holder's state.
// The Mailer ends every attempt before its lease does (see Config.Queue),
// so a take-over happens only after a holder died.
type QueueStore interface {
	// Enqueue stores a message, its recipients and its body, durably. It
	// assigns m.ID when empty.
	Enqueue(ctx context.Context, m *QueuedMessage, body io.Reader) error
	// Lease returns up to max messages that no lease holds at req.Now and
	// that have a recipient due by req.DueBy (NextAttempt not after it),
	// earliest NextAttempt first, and leases each until req.Now plus
	// req.Duration (or a duration of the store's own, which LeaseUntil then
	// says), with a fresh token in QueuedMessage.Lease.
	Lease(ctx context.Context, req LeaseRequest) ([]*QueuedMessage, error)
	// Body opens a queued message's body. A store that finds the body
	// damaged quarantines the message and returns an error wrapping
	// ErrCorrupt.
	Body(ctx context.Context, id string) (io.ReadCloser, error)
	// Update records the message as it is after an attempt and ends the
	// lease m.Lease names; a message without recipients is deleted with its
	// body. When m.Lease is not the message's current lease, nothing
	// changes and the error wraps ErrLeaseLost.
	Update(ctx context.Context, m *QueuedMessage) error
	// Release ends the lease token holds on message id without a change.
	// When token is not the current lease (taken over, already ended) or
	// the message is gone, it does nothing and returns nil.
	Release(ctx context.Context, id, token string) error
	// Quarantine takes a leased message out of the queue for good, because
	// its stored state cannot be trusted (reason says why): it is never
	// leased again nor listed, and a store keeps it aside for an operator
	// where it can. Like Update it needs the current token, else
	// ErrLeaseLost.
	Quarantine(ctx context.Context, id, token string, reason error) error
	// List returns every queued message.
	List(ctx context.Context) ([]*QueuedMessage, error)
}

// QuarantineReporter is implemented by a QueueStore that sets damaged
// entries aside on its own, outside any lease — the directory store does
// so when it opens and finds files it cannot read. The Mailer calls
// TakeQuarantined at the start of every queue round and reports each entry
// as EventQuarantined without a recipient (the state that named them could
// not be read). Entries set aside by Body or Quarantine are not returned
// here: the Mailer reports those itself.
type QuarantineReporter interface {
	// TakeQuarantined returns the entries set aside since the last call,
	// each once: what was wrong (wrapping ErrCorrupt) by message ID.
	TakeQuarantined() map[string]error
}

// LeaseRequest is what QueueStore.Lease is asked for.
type LeaseRequest struct {
	// Now is the time on the caller's clock: leases that end by Now are
	// over, and new ones end at Now plus Duration.
	Now time.Time
	// DueBy is the cutoff for NextAttempt; zero means Now. Flush passes a
	// time far ahead, to get every message whatever its schedule — but
	// never one under a lease.
	DueBy time.Time
	// Max is the most messages returned.
	Max int
	// Duration is how long the leases last.
	Duration time.Duration
}

// due is the NextAttempt cutoff of the request.
func (r LeaseRequest) due() time.Time {
	if r.DueBy.IsZero() {
		return r.Now
	}
	return r.DueBy
}

// Errors of the queue stores, for errors.Is.
var (
	// ErrLeaseLost: Update, Release or Quarantine presented a lease token
	// that no longer holds the message (it ran out and was granted again,
	// or was already ended). Nothing was changed.
	ErrLeaseLost = errors.New("mailroute: queue: lease ran out and was granted again")
	// ErrCorrupt: a store found a queued entry damaged and quarantined it.
	ErrCorrupt = errors.New("mailroute: queue: corrupt entry quarantined")
)

// QueuedMessage is a message waiting in the queue, with the recipients it
// still has to reach.
type QueuedMessage struct {
	ID         string
	From       string // the reverse-path; "" is the null sender
	Created    time.Time
	Recipients []QueuedRecipient
	// RequireTLS: the message was sent under WithREQUIRETLS (RFC 8689), so
	// every retry goes as that mark demands — only over authenticated TLS
	// to a server offering REQUIRETLS, with the MAIL parameter — and a
	// recipient no such hop takes is deferred with ErrREQUIRETLS until
	// RetryPolicy.MaxAge gives it up. Stores keep it as Enqueue stored
	// it: Update does not change it, so no copy can drop the mark.
	RequireTLS bool
	// Lease is the token of the lease this copy came with, set by
	// QueueStore.Lease and presented to Update, Release and Quarantine;
	// "" on copies from List. Stores choose its form.
	Lease string
	// LeaseUntil is when that lease ends, on the clock of
	// LeaseRequest.Now; zero on copies from List.
	LeaseUntil time.Time
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
// default: first retry 5½ to 6½ minutes after the attempt that deferred,
// then doubling with ±20% jitter up to 2 hours between attempts, giving up
// after 5 days, and trying the relay from the third attempt of a
// recipient direct delivery keeps deferring.
//
// The first retry is aimed at greylisting, the commonest deferral of mail
// from a new sender. Greylisters refuse a new (client, sender, recipient)
// triplet for a fixed delay and accept it when it comes back after that,
// for hours or days: postgrey's --delay is 300 s, and sqlgrey, rspamd,
// ASSP and Plesk's Warden default to 5 minutes as well (a few sites set 1
// to 15; OpenBSD's spamd waits 25). A retry before the delay is wasted —
// some greylisters even restart the wait — and one long after it only
// makes the mail late. So the first retry comes FirstRetry after the end
// of the deferring attempt (the greylister's clock started at our RCPT,
// within it) and its jitter only adds, up to Jitter×FirstRetry: with the
// default of 5½ minutes it lands 30 to 100 seconds after the usual 5
// minutes, never before; a 15- or 25-minute greylist passes at the second
// or third retry (about 17 and 39 minutes in).
//
// Against the references: Postfix retries after 300 s, backs off to 4000 s
// and gives up after 5 days; RFC 5321 §4.5.4.1 asks for at least 30
// minutes between retries and 4–5 days in all. The first retry is sooner
// than the RFC's 30 minutes because a password-reset mail that arrives
// half an hour late is a failure to its reader; the doubling reaches the
// RFC's spacing by the third retry, and the cap of 2 hours (above
// Postfix's 67 minutes) keeps a dead host from being hammered over the 5
// days.
type RetryPolicy struct {
	FirstRetry  time.Duration // 0: 5 minutes 30 seconds
	MaxInterval time.Duration // 0: 2 hours
	MaxAge      time.Duration // 0: 5 days; then the recipient is given up
	Multiplier  float64       // 0: 2
	Jitter      float64       // randomisation factor, 0: 0.2; negative: none
	// FallbackAfter is how many deferred direct attempts a recipient gets
	// before the next attempt goes through the relay (graylisting that
	// never clears, a host that stays down). 0: 2; negative: never.
	FallbackAfter int
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.FirstRetry <= 0 {
		p.FirstRetry = 5*time.Minute + 30*time.Second
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
// first): FirstRetry plus up to Jitter of it for the first (never sooner:
// see the greylisting note above), then github.com/cenkalti/backoff/v4's
// exponential schedule.
func (p RetryPolicy) delay(attempts int) time.Duration {
	if attempts <= 1 {
		return p.FirstRetry + time.Duration(rand.Float64()*p.Jitter*float64(p.FirstRetry))
	}
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
	// EventQuarantined: the stored message failed the checks a Mailer
	// applies to what it reads back (addresses, sizes, the body's
	// checksum); it was taken out of the queue without being sent, and the
	// store keeps it aside where it can. Err says what was wrong.
	EventQuarantined
	// EventNotSaved: the store did not take what an attempt changed. It
	// follows the outcome's own event (which then has no NextAttempt); Err
	// says what was not saved and why. The stored state is the one before
	// the attempt, so the recipient is tried again.
	EventNotSaved
)

var eventNames = [...]string{"", "delivered", "queued", "deferred", "failed", "gave-up", "quarantined", "not-saved"}

// String returns "delivered", "queued", "deferred", "failed", "gave-up",
// "quarantined" or "not-saved".
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
	Fallback    bool // the relay was tried because direct failed
	Host        string
	TLS         TLSProtection // which TLS protected the attempt (RecipientResult.TLS)
	Attempt     int           // 1 for the first
	NextAttempt time.Time     // for EventQueued and EventDeferred: as stored; zero when not stored
	Err         error
}
