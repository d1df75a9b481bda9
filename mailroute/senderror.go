package mailroute

import (
	"errors"
	"strconv"
	"strings"
)

// SendError is the error of a Send, SendMail or SendMsg that did not
// deliver to every recipient. It says who got the message and who did not,
// so that a caller retrying on error can retry only the rest:
//
//	err := m.SendMail(addr, auth, from, to, msg)
//	var se *mailroute.SendError
//	if errors.As(err, &se) {
//		retryLater(se.Deferred) // se.Delivered already have it; se.Failed never will
//	}
//
// net/smtp's SendMail stops at the first refused recipient and returns one
// error whether or not others were accepted, so a retry of the whole call
// sends again to those already delivered. SendError holds one entry per
// recipient instead. errors.Is and errors.As see every recipient's error
// (errors.As(err, **Error) gives the first one's SMTP reply).
type SendError struct {
	// Delivered were accepted by a server: do not send to them again.
	Delivered []string
	// Queued are in the Mailer's queue (Config.Queue), which retries them:
	// do not send to them again either.
	Queued []string
	// Deferred were not delivered for a reason that may pass (a temporary
	// refusal, no server reachable, nothing sent because another address
	// of the call was malformed): retry them.
	Deferred []string
	// Failed were refused for good (unknown user, malformed address, a
	// message no server will take): do not retry them unchanged.
	Failed []string
	// Result is the whole outcome, recipient by recipient.
	Result *Result
}

// Error says how many recipients were not delivered, to whom it was
// delivered, and each failure, naming its recipients once per distinct
// error.
func (e *SendError) Error() string {
	var b strings.Builder
	total := len(e.Delivered) + len(e.Queued) + len(e.Deferred) + len(e.Failed)
	not := len(e.Deferred) + len(e.Failed)
	b.WriteString("mailroute: ")
	switch {
	case not == total:
		b.WriteString("nothing delivered")
	default:
		b.WriteString(strconv.Itoa(not) + " of " + strconv.Itoa(total) + " recipients not delivered")
	}
	if len(e.Delivered) > 0 {
		b.WriteString(" (delivered to " + strings.Join(e.Delivered, ", ") + ")")
	}
	if e.Result == nil {
		return b.String()
	}
	// Recipients sharing one error value (a refused message, a relay that
	// is down) are listed together, so the cause is said once.
	type group struct {
		rcpts []string
		err   error
	}
	var groups []*group
	byErr := make(map[error]*group)
	for _, r := range e.Result.Recipients {
		if r.Err == nil || r.Status == Queued || r.Status == Delivered {
			continue
		}
		g := byErr[r.Err]
		if g == nil {
			g = &group{err: r.Err}
			byErr[r.Err] = g
			groups = append(groups, g)
		}
		g.rcpts = append(g.rcpts, quoteRcpt(r.Rcpt))
	}
	for _, g := range groups {
		b.WriteString("\n" + strings.Join(g.rcpts, ", ") + ": " + unprefixed(g.err.Error()))
	}
	return b.String()
}

// Unwrap gives errors.Is and errors.As the error of every recipient that
// was neither delivered nor queued, in order.
func (e *SendError) Unwrap() []error {
	if e.Result == nil {
		return nil
	}
	var errs []error
	for _, r := range e.Result.Recipients {
		if r.Err != nil && r.Status != Queued && r.Status != Delivered {
			errs = append(errs, r.Err)
		}
	}
	return errs
}

// quoteRcpt writes a recipient as <addr>, or quoted when it is a malformed
// address as given, so that nothing the caller passed in (a CR, LF, NUL or
// angle bracket) reaches a log line as is.
func quoteRcpt(rcpt string) string {
	for _, c := range []byte(rcpt) {
		if c < 0x20 || c == 0x7f || c == '<' || c == '>' {
			return strconv.Quote(rcpt)
		}
	}
	return "<" + rcpt + ">"
}

// newSendError sorts a Result's recipients by outcome; nil when every
// recipient was delivered or queued.
func newSendError(res *Result) *SendError {
	// The common case, everyone delivered or queued, is decided without
	// building the lists.
	ok := true
	for _, r := range res.Recipients {
		if r.Status != Delivered && r.Status != Queued {
			ok = false
			break
		}
	}
	if ok {
		return nil
	}
	e := &SendError{Result: res}
	for _, r := range res.Recipients {
		switch r.Status {
		case Delivered:
			e.Delivered = append(e.Delivered, r.Rcpt)
		case Queued:
			e.Queued = append(e.Queued, r.Rcpt)
		case Failed:
			e.Failed = append(e.Failed, r.Rcpt)
		default:
			// Deferred, or no outcome at all, which must not pass for
			// delivered.
			e.Deferred = append(e.Deferred, r.Rcpt)
		}
	}
	if len(e.Deferred) == 0 && len(e.Failed) == 0 {
		return nil
	}
	return e
}

// ErrNotAttempted is the error of the recipients of a Send that stopped
// before any delivery because of another recipient's malformed address.
// They are Deferred: nothing is wrong with them.
var ErrNotAttempted = errors.New("not sent: another recipient of the same call is malformed")

// refusedResult is the Result of a Send that failed before delivering to
// anyone: one entry per distinct recipient as given. bad is the index in
// to of the malformed recipient, or -1 when the cause concerns them all (a
// malformed sender, a message that cannot be sent, a closed Mailer).
// permanent says whether cause can pass.
func refusedResult(to []string, cause error, bad int, permanent bool) *Result {
	res := &Result{Recipients: make([]RecipientResult, 0, len(to))}
	all := &Error{Permanent: permanent, Err: cause}
	var other *Error
	seen := make(map[string]bool, len(to))
	for i, rcpt := range to {
		if seen[rcpt] {
			continue
		}
		seen[rcpt] = true
		r := RecipientResult{Rcpt: rcpt, Err: all, Status: statusOf(all)}
		if bad >= 0 && i != bad {
			if other == nil {
				other = &Error{Err: ErrNotAttempted}
			}
			r.Err, r.Status = other, Deferred
		}
		res.Recipients = append(res.Recipients, r)
	}
	return res
}
