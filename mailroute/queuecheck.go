package mailroute

import (
	"fmt"
	"unicode/utf8"

	"github.com/mailroute/go-mailroute/internal/message"
)

// maxLastError bounds the stored LastError: the store's state is read back
// whole on every lease, and a reply is at most a few lines (RFC 5321
// §4.5.3.1.5 allows 512 octets a line).
const maxLastError = 64 << 10

// checkQueued checks a message read back from a store as Send checks its
// caller's input: a state file edited by hand, a row changed by another
// program or a store with a bug must not put anything on the wire that Send
// would have refused. The sender and every recipient must parse as
// addresses and be stored in the form Send stores (so that what was
// checked is what is sent), recipients must not repeat (each would be
// delivered once per copy), and counters and sizes must be sane.
func checkQueued(qm *QueuedMessage) error {
	_, err := checkQueuedInto(qm, nil, nil)
	return err
}

// checkQueuedInto is checkQueued, keeping what it parsed: the recipients'
// addresses, in the order of qm.Recipients, appended to into (a drained
// message's attempt sends them, so they are parsed once). Repeats are
// found by comparing with those before up to dedupLinear recipients, as
// Send finds them, without a map. Addresses are parsed through memo when
// not nil, as Send parses them (the Mailer's: the sender, above all, is
// the same message after message).
func checkQueuedInto(qm *QueuedMessage, into []message.Address, memo *message.AddressMemo) ([]message.Address, error) {
	parse := message.ParseAddress
	if memo != nil {
		parse = memo.Parse
	}
	if qm.From != "" {
		var a message.Address
		var null bool
		var err error
		if qm.From == "<>" {
			a, null, err = message.ParseReversePath(qm.From)
		} else {
			a, err = parse(qm.From) // a reverse-path that is not null is a mailbox
		}
		if err != nil {
			return nil, fmt.Errorf("mailroute: queue: stored sender: %w", err)
		}
		if null || a.StringFrom(qm.From) != qm.From {
			return nil, fmt.Errorf("mailroute: queue: stored sender %q is not in the form Send stores (%q)", qm.From, a.String())
		}
	}
	if len(qm.Recipients) == 0 {
		return nil, fmt.Errorf("mailroute: queue: stored message %s has no recipients", qm.ID)
	}
	var seen map[string]bool
	if len(qm.Recipients) > dedupLinear {
		seen = make(map[string]bool, len(qm.Recipients))
	}
	for i, r := range qm.Recipients {
		a, err := parse(r.Rcpt)
		if err != nil {
			return nil, fmt.Errorf("mailroute: queue: stored recipient %d: %w", i+1, err)
		}
		if a.StringFrom(r.Rcpt) != r.Rcpt || a.Domain == "" {
			return nil, fmt.Errorf("mailroute: queue: stored recipient %d %q is not in the form Send stores (%q)", i+1, r.Rcpt, a.String())
		}
		if seen != nil {
			if seen[r.Rcpt] {
				return nil, fmt.Errorf("mailroute: queue: stored recipient %q is listed twice", r.Rcpt)
			}
			seen[r.Rcpt] = true
		} else {
			for _, o := range qm.Recipients[:i] {
				if o.Rcpt == r.Rcpt {
					return nil, fmt.Errorf("mailroute: queue: stored recipient %q is listed twice", r.Rcpt)
				}
			}
		}
		if r.Attempts < 0 || r.DirectAttempts < 0 || r.DirectAttempts > r.Attempts {
			return nil, fmt.Errorf("mailroute: queue: stored recipient %q: attempts %d, direct attempts %d", r.Rcpt, r.Attempts, r.DirectAttempts)
		}
		if len(r.LastError) > maxLastError || !utf8.ValidString(r.LastError) {
			return nil, fmt.Errorf("mailroute: queue: stored recipient %q: last error is %d octets or not UTF-8", r.Rcpt, len(r.LastError))
		}
		into = append(into, a)
	}
	return into, nil
}
