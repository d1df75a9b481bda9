package mailroute

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mailroute/go-mailroute/internal/mx"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// EnhancedCode is an RFC 3463 enhanced status code such as 5.7.1; the zero
// value means the server gave none.
type EnhancedCode [3]int

// String formats the code as "5.7.1", or "" for the zero value.
func (c EnhancedCode) String() string {
	if c == (EnhancedCode{}) {
		return ""
	}
	return strconv.Itoa(c[0]) + "." + strconv.Itoa(c[1]) + "." + strconv.Itoa(c[2])
}

// Error is the one error type of delivery. It carries the SMTP reply when a
// server gave one, the command it answered, the host, and whether the
// failure is permanent. Use errors.As to get it from a RecipientResult.Err
// or from Send's joined error; retry and fallback decisions read its fields,
// never its text.
type Error struct {
	// Code is the SMTP reply code; 0 when no server answered (DNS, network,
	// TLS, local checks).
	Code int
	// Enhanced is the RFC 3463 enhanced status code, if any.
	Enhanced EnhancedCode
	// Message is the server's reply text, lines joined by "\n".
	Message string
	// Command is the step that failed: "DNS", "connect", "greeting",
	// "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BODY" (writing
	// the message), "." (the reply to the end of data), or "route".
	Command string
	// Host is the server that answered last: an MX host name or the
	// relay's host. Empty when no server was reached.
	Host string
	// Permanent is true for failures that retrying cannot fix: 5xx replies,
	// a null MX, a domain that does not exist.
	Permanent bool
	// Err is the underlying cause, reachable with errors.Is and errors.As
	// (for instance ErrNullMX, ErrRelayAuth, a *net.OpError).
	Err error
}

// Error formats "host: COMMAND: 550 5.1.1 text: cause". It names no
// package: it is read inside a SendError or a RecipientResult, which say
// where it came from.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Host != "" {
		b.WriteString(e.Host)
		b.WriteString(": ")
	}
	if e.Command != "" {
		b.WriteString(e.Command)
		b.WriteString(": ")
	}
	if e.Code != 0 {
		b.WriteString(strconv.Itoa(e.Code))
		if s := e.Enhanced.String(); s != "" {
			b.WriteString(" " + s)
		}
		if e.Message != "" {
			b.WriteString(" " + strings.ReplaceAll(e.Message, "\n", " / "))
		}
		if e.Err != nil {
			b.WriteString(": ")
		}
	}
	if e.Err != nil {
		b.WriteString(unprefixed(e.Err.Error()))
	}
	return b.String()
}

// unprefixed drops the "mailroute: " that starts a wrapped error's lines
// (ErrClosed, a router's error, a joined queue error): the error wrapping
// it already says where it comes from, and "mailroute: … mailroute: …"
// stutters.
func unprefixed(s string) string {
	if !strings.Contains(s, pkgPrefix) {
		return s
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, pkgPrefix)
	}
	return strings.Join(lines, "\n")
}

const pkgPrefix = "mailroute: "

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether a later attempt may succeed.
func (e *Error) Temporary() bool { return !e.Permanent }

// IsPermanent reports whether err holds a permanent *Error.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

// Errors a delivery can wrap, for errors.Is.
var (
	// ErrNoRelay: a recipient was routed to the relay but
	// Config.Relay is nil. A configuration error: the mail is kept
	// (Deferred), not bounced.
	ErrNoRelay = errors.New("routed to the relay, but no relay is configured (Config.Relay)")
	// ErrRelayAuth: the relay refused the credentials, or no
	// mechanism fits. A configuration problem: fix Relay's credentials.
	ErrRelayAuth = errors.New("relay authentication failed")
	// ErrRelayTLS: the relay's TLS failed (no STARTTLS offered, a
	// certificate for the wrong name, an unknown authority, expired). No
	// credentials were sent.
	ErrRelayTLS = errors.New("relay TLS failed; no credentials were sent")
	// ErrMessageTooLarge: the message exceeds the server's SIZE limit.
	ErrMessageTooLarge = smtpclient.ErrSizeExceeded
	// ErrSMTPUTF8Required: an address needs SMTPUTF8 and the server lacks it.
	ErrSMTPUTF8Required = smtpclient.ErrSMTPUTF8Unsupported
	// ErrConnectionLost: the connection dropped after the end of data and
	// before the server's reply. The message may have been accepted; a
	// retry may deliver it twice (RFC 1047), which beats losing it.
	ErrConnectionLost = smtpclient.ErrConnectionLost
	// ErrTLSRequired: DirectOptions.TLS is RequireTLS and the MX host
	// offered no STARTTLS or failed verification; nothing was sent.
	ErrTLSRequired = errors.New("TLS required but not available with a verified certificate")
)

// fromClient converts the SMTP engine's error into the public type, adding
// the sentinel that names its class where the engine's does not suffice.
func fromClient(err error, extra error) *Error {
	var ce *smtpclient.Error
	if !errors.As(err, &ce) {
		e := &Error{Err: err}
		if extra != nil {
			e.Err = causes{extra, err}
		}
		return e
	}
	e := &Error{
		Code: ce.Code, Enhanced: EnhancedCode(ce.Enhanced), Message: ce.Message,
		Command: ce.Command, Host: ce.Host, Permanent: ce.Permanent, Err: ce.Err,
	}
	if extra != nil {
		if e.Err != nil {
			e.Err = causes{extra, e.Err}
		} else {
			e.Err = extra
		}
	}
	return e
}

// causes is a sentinel and the cause it classifies, on one line
// ("relay authentication failed: …"), both reachable with errors.Is.
type causes []error

func (c causes) Error() string {
	parts := make([]string, len(c))
	for i, e := range c {
		parts[i] = e.Error()
	}
	return strings.Join(parts, ": ")
}

func (c causes) Unwrap() []error { return c }

// fromDNS converts an MX lookup failure.
func fromDNS(err error) *Error {
	var me *mx.Error
	permanent := errors.As(err, &me) && !me.Temporary()
	return &Error{Command: "DNS", Permanent: permanent, Err: err}
}

// errorf makes a local error (no server involved).
func errorf(permanent bool, cause error, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if cause != nil {
		return &Error{Permanent: permanent, Err: fmt.Errorf("%s: %w", msg, cause)}
	}
	return &Error{Permanent: permanent, Err: errors.New(msg)}
}
