package mailroute

// Status is a recipient's outcome.
type Status uint8

const (
	// Delivered: a server accepted the message for the recipient.
	Delivered Status = iota + 1
	// Deferred: delivery failed in a way that may pass; try again later.
	Deferred
	// Failed: delivery failed permanently; do not retry.
	Failed
	// Queued: delivery failed temporarily and the recipient is safely in
	// the Mailer's queue (Config.Queue), which will retry it.
	Queued
)

// String returns "delivered", "deferred", "failed" or "queued".
func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Deferred:
		return "deferred"
	case Failed:
		return "failed"
	case Queued:
		return "queued"
	}
	return "unknown"
}

// Result says what happened to each recipient of a Send.
type Result struct {
	// Recipients in the order they were given, duplicates removed.
	Recipients []RecipientResult
}

// RecipientResult is one recipient's outcome.
type RecipientResult struct {
	// Rcpt is the recipient as it went on the wire (domain normalised).
	Rcpt string
	// Via is the path that delivered, or the last one tried.
	Via Via
	// Route is the routing decision, with its reason.
	Route Route
	// Fallback is true when the relay delivered or was tried because
	// direct delivery failed.
	Fallback bool
	// Host is the server that answered last: MX host name or relay.
	Host string
	// TLS says which TLS protected the transaction that delivered or
	// refused the recipient: none, unverified (opportunistic), verified
	// (RequireTLS), MTA-STS, DANE, or the verified relay. TLSNone when no
	// transaction was had.
	TLS TLSProtection
	// Status is Delivered, Deferred, Failed, or Queued. A Queued
	// recipient's Err still says why it was not delivered now.
	Status Status
	// Response is the server's reply accepting the message (for example
	// "250 2.0.0 Ok: queued as 4Xyz"), when Delivered.
	Response string
	// Err is nil when Delivered; otherwise errors.As(Err, **Error) gives
	// the SMTP reply, the command and the host. After a failed fallback it
	// holds both failures, the relay's first.
	Err error
	// DirectErr is the direct-delivery failure that made the recipient fall
	// back to the relay (Fallback is true), whether the relay then
	// delivered or not.
	DirectErr error
}

// Err returns nil when every recipient was delivered or safely queued, and
// otherwise a *SendError saying who got the message and who did not.
func (r *Result) Err() error {
	if e := newSendError(r); e != nil {
		return e
	}
	return nil
}

// fallbackError is a recipient that failed direct and then at the relay.
type fallbackError struct{ relay, direct error }

func (e *fallbackError) Error() string {
	return e.relay.Error() + " (after direct delivery failed: " + e.direct.Error() + ")"
}

// Unwrap gives errors.As the relay's *Error first, then the direct one.
func (e *fallbackError) Unwrap() []error { return []error{e.relay, e.direct} }
