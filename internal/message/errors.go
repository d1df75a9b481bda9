package message

import (
	"errors"
	"fmt"
)

// Sentinel errors, reachable with errors.Is through the errors this package
// returns.
var (
	// ErrInvalidAddress is wrapped by every *AddressError.
	ErrInvalidAddress = errors.New("invalid address")
	// ErrEmptyBody: the message has no bytes at all.
	ErrEmptyBody = errors.New("empty message")
	// ErrNUL: the message contains a NUL octet, which RFC 5321 §4.1.4
	// forbids and which servers treat inconsistently.
	ErrNUL = errors.New("NUL octet in message")
	// ErrLineTooLong: a line is longer than MaxLineLength octets
	// (RFC 5321 §4.5.3.1.6).
	ErrLineTooLong = errors.New("line too long")
	// ErrTooLarge: the canonical message is larger than BodyOptions.MaxSize.
	ErrTooLarge = errors.New("message too large")
	// ErrClosed: the Body was used after Close.
	ErrClosed = errors.New("body is closed")
)

// AddressError is why an address was refused. It names the input.
type AddressError struct {
	Input  string // the address as given
	Reason string // what is wrong with it, for people
	Err    error  // the underlying error (a *dnsname.Error for a bad domain), or nil
}

// maxQuotedInput bounds how much of the input an error message repeats, so
// that a megabyte of garbage does not become a megabyte of log line.
const maxQuotedInput = 300

// Error names the input (shortened when it is very long) and the reason.
func (e *AddressError) Error() string {
	in := e.Input
	if len(in) > maxQuotedInput {
		in = in[:maxQuotedInput] + "..."
	}
	return fmt.Sprintf("invalid address %q: %s", in, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalidAddress) hold, and errors.Is(err,
// dnsname.ErrInvalid) too when the domain was the problem.
func (e *AddressError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalidAddress, e.Err}
	}
	return []error{ErrInvalidAddress}
}

func addrErr(input, format string, args ...any) error {
	return &AddressError{Input: input, Reason: fmt.Sprintf(format, args...)}
}

// BodyError is why a message was refused, and where: it wraps one of
// ErrEmptyBody, ErrNUL, ErrLineTooLong or ErrTooLarge.
type BodyError struct {
	Err    error // the sentinel
	Line   int64 // 1-based line of the message (as canonicalised), 0 when it does not apply
	Offset int64 // octet offset in the input, -1 when it does not apply
	Limit  int64 // the limit that was exceeded, 0 when none
}

// Error says what is wrong and where.
func (e *BodyError) Error() string {
	switch e.Err {
	case ErrNUL:
		return fmt.Sprintf("%v at line %d (input offset %d)", e.Err, e.Line, e.Offset)
	case ErrLineTooLong:
		return fmt.Sprintf("%v: line %d is longer than %d octets (RFC 5321 §4.5.3.1.6)", e.Err, e.Line, e.Limit)
	case ErrTooLarge:
		return fmt.Sprintf("%v: more than the limit of %d octets", e.Err, e.Limit)
	}
	return e.Err.Error()
}

// Unwrap gives the sentinel.
func (e *BodyError) Unwrap() error { return e.Err }
