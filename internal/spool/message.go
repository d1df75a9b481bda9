package spool

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"
)

// Recipient is one recipient still to be delivered.
type Recipient struct {
	Rcpt           string    // the address as it goes on the wire
	Attempts       int       // delivery attempts so far, every path counted
	DirectAttempts int       // deferred direct attempts so far
	NextAttempt    time.Time // when the next attempt is due
	LastError      string    // the last failure, for listings
	Queued         time.Time // when it entered the queue, for giving up after a maximum age
}

// Message is one queued message: the envelope sender, the recipients still
// to be delivered and, on disk beside it, the canonical body.
type Message struct {
	// ID names the message in the store. It is unique and safe as a file
	// name: 1 to 128 of [A-Za-z0-9_-]. Enqueue assigns a time-ordered one
	// (see NewID) when it is empty.
	ID string
	// From is the reverse-path; "" is the null sender.
	From string
	// Created is when the message was first queued.
	Created time.Time
	// Recipients are those still to be delivered; a message without any is
	// deleted by Update.
	Recipients []Recipient
	// Meta is small extra state the queue keeps, such as the Message-ID it
	// must keep stable across retries. It is stored as is.
	Meta map[string]string
	// RequireTLS marks a message that may go only as RFC 8689 REQUIRETLS
	// allows. It is stored by Enqueue and never changed by Update, so that
	// no copy of the message can drop it; a state file with it is written
	// in format version 2, which an older version of this package
	// quarantines instead of reading it without the mark.
	RequireTLS bool

	// Lease identifies the Lease that returned this copy, so that Update,
	// ReleaseLease and Quarantine can refuse a holder whose lease was
	// released, ended in Update, or ran out and was granted again; 0 for
	// copies that did not come from Lease (they are not fenced).
	Lease uint64
}

// Errors returned by the store, for errors.Is.
var (
	// ErrNotFound: no message with that ID is queued.
	ErrNotFound = errors.New("spool: no such message")
	// ErrExists: Enqueue was given the ID of a queued message.
	ErrExists = errors.New("spool: message ID already queued")
	// ErrLeaseLost: Update came from a lease that expired and was granted
	// again to another caller, whose view of the message wins.
	ErrLeaseLost = errors.New("spool: lease expired and was granted again")
	// ErrCorrupt: a stored entry failed its checks and was moved aside.
	ErrCorrupt = errors.New("spool: corrupt entry")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("spool: store closed")
	// ErrLocked: another Store, probably in another process, has the
	// directory open.
	ErrLocked = errors.New("spool: directory in use by another process")
)

// maxIDLen bounds an ID well below file-name limits (255 bytes) with room
// for the extensions and suffixes the store adds.
const maxIDLen = 128

// NewID returns a fresh message ID: 12 hex digits of Unix milliseconds and
// 16 of randomness (28 characters). The time prefix makes IDs sort in
// queueing order, which keeps directory listings and logs readable; 64
// random bits make collisions negligible at any realistic rate.
func NewID(now time.Time) string {
	var b [14]byte
	ms := uint64(now.UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	rand.Read(b[6:]) // never fails (crypto/rand since Go 1.24)
	return hex.EncodeToString(b[:])
}

// checkID reports whether id is usable as a file name on every platform:
// no separators, no dots (so no "..", no extension confusion), bounded.
func checkID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("spool: message ID must be 1 to %d characters, got %d", maxIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("spool: message ID %q: character %q not in [A-Za-z0-9_-]", id, c)
		}
	}
	return nil
}

// checkMessage validates what a caller hands to Enqueue or Update. Strings
// the queue relies on must be valid UTF-8, because JSON would silently
// replace invalid bytes and the address read back would not be the one
// queued; LastError is only for people and is cleaned by clone instead.
func checkMessage(m *Message) error {
	if err := checkID(m.ID); err != nil {
		return err
	}
	if !utf8.ValidString(m.From) {
		return fmt.Errorf("spool: message %s: sender is not valid UTF-8", m.ID)
	}
	for i, r := range m.Recipients {
		if r.Rcpt == "" || !utf8.ValidString(r.Rcpt) {
			return fmt.Errorf("spool: message %s: recipient %d is empty or not valid UTF-8", m.ID, i)
		}
	}
	for k, v := range m.Meta {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("spool: message %s: meta %q is not valid UTF-8", m.ID, k)
		}
	}
	return nil
}

// clone returns a deep copy of m with its times in UTC and without
// monotonic clock readings, the form they have after a trip through the
// state file: what List returns then compares equal before and after a
// restart. An empty Meta becomes nil for the same reason.
func clone(m *Message) *Message {
	c := *m
	c.Created = m.Created.UTC()
	c.Recipients = slices.Clone(m.Recipients)
	for i := range c.Recipients {
		r := &c.Recipients[i]
		r.NextAttempt = r.NextAttempt.UTC()
		r.Queued = r.Queued.UTC()
		if !utf8.ValidString(r.LastError) {
			// What JSON does: each invalid byte becomes U+FFFD.
			r.LastError = string([]rune(r.LastError))
		}
	}
	if len(m.Meta) == 0 {
		c.Meta = nil
	} else {
		c.Meta = maps.Clone(m.Meta)
	}
	return &c
}

// due is the earliest NextAttempt of m's recipients: when the message next
// has work to do.
func due(m *Message) time.Time {
	var t time.Time
	for i, r := range m.Recipients {
		if i == 0 || r.NextAttempt.Before(t) {
			t = r.NextAttempt
		}
	}
	return t
}
