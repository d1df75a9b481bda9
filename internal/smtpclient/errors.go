package smtpclient

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Each is reachable with errors.Is through the *Error that
// Dial or Send returns (it sits in Error.Err, joined with any underlying
// network or TLS error), so a caller can both errors.As(err, &*Error) for the
// reply and errors.Is(err, ErrX) for the kind.
var (
	// ErrTLSFailed: the TLS handshake (STARTTLS or implicit) failed. With
	// TLSOpportunistic the caller may redial and retry with TLSNone.
	ErrTLSFailed = errors.New("TLS handshake failed")
	// ErrTLSUnavailable: TLSRequired, but the server did not offer STARTTLS
	// (or refused it). Nothing was sent in plaintext beyond EHLO.
	ErrTLSUnavailable = errors.New("STARTTLS required but not available")
	// ErrAuthRefusedInsecure: credentials were configured but the session is
	// not encrypted (and AllowInsecureAuth does not apply): no AUTH was sent.
	ErrAuthRefusedInsecure = errors.New("refusing to authenticate without TLS")
	// ErrNoAuthMechanism: the server offers no AUTH mechanism that the
	// configured credentials can use.
	ErrNoAuthMechanism = errors.New("no usable AUTH mechanism")
	// ErrAuthFailed: the server rejected the credentials (535, 534, 530, 538
	// are permanent; 454 is temporary). Error.Code holds the reply code; it
	// is 0 when Config.AuthFor refused before anything was sent.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrSizeExceeded: the message is larger than the server's SIZE limit;
	// nothing was sent.
	ErrSizeExceeded = errors.New("message exceeds the server's SIZE limit")
	// ErrSMTPUTF8Unsupported: the transaction needs SMTPUTF8 and the server
	// does not offer it; nothing was sent.
	ErrSMTPUTF8Unsupported = errors.New("server does not support SMTPUTF8")
	// ErrConnectionLost: the connection dropped or timed out after the final
	// "." (or after BDAT LAST and its chunk were written) and before the
	// server's reply. The error's Command is ".". The outcome is unknown:
	// the server may have accepted the message. The error is temporary;
	// re-sending may deliver a duplicate (RFC 1047), which is the lesser
	// evil.
	ErrConnectionLost = errors.New("connection lost after end of data; the message may have been accepted")
	// ErrProtocol: the server's reply was malformed (non-numeric code,
	// mismatched codes in a multi-line reply, a line over 2000 octets, too
	// many lines, plaintext injected after STARTTLS, unexpected reply class).
	ErrProtocol = errors.New("SMTP protocol error")
	// ErrInvalidAddress: an address contains CR, LF, NUL, '<' or '>'.
	// Nothing was written.
	ErrInvalidAddress = errors.New("invalid character in address")
	// ErrOutOfStep: the server sent a reply (or bytes) when none was due —
	// an unsolicited or extra reply line, a reply after the final one,
	// data waiting on an idle session — so which reply answers which
	// command is no longer known. Every recipient of the transaction gets
	// it (temporary), whatever the replies seemed to say, and the session
	// is closed. With Command "." the message data had gone out: the
	// server may have accepted it.
	ErrOutOfStep = errors.New("server out of step: a reply arrived that answers no command, so no reply of the transaction can be trusted")
	// ErrUnusable: the connection had an earlier protocol or I/O error (or
	// was closed) and must not be reused.
	ErrUnusable = errors.New("connection is not usable")
)

// Error is the one error type of this package. It carries the server's reply
// (when there was one), the command it answered, the host, and whether the
// failure is permanent. Network, timeout, TLS and protocol errors are
// temporary and have Code 0 with the cause in Err.
type Error struct {
	Code     int    // SMTP reply code; 0 when there was no reply
	Enhanced [3]int // RFC 3463 enhanced status code; zero when none
	Message  string // reply text (lines joined by "\n"), enhanced code stripped
	// Command is the step that failed: "connect", "greeting", "EHLO",
	// "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BODY" (writing
	// the body, BDAT's chunk included), "." (the reply to the final dot,
	// and equally the reply to BDAT LAST when a recipient was accepted:
	// whatever comes after the end of the data), "BDAT" (a BDAT reply lost
	// when nothing could have been delivered), "RSET", "NOOP", "QUIT".
	Command   string
	Host      string
	Permanent bool  // a 5xx reply or a local condition that retrying cannot fix
	Err       error // underlying cause and/or sentinel; see Unwrap
}

// Error formats "smtpclient: host: COMMAND: 550 5.1.1 text: cause".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("smtpclient: ")
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
		if e.Enhanced != [3]int{} {
			b.WriteByte(' ')
			b.WriteString(formatEnhanced(e.Enhanced))
		}
		if e.Message != "" {
			b.WriteByte(' ')
			b.WriteString(strings.ReplaceAll(e.Message, "\n", " / "))
		}
	} else if e.Message != "" {
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		if e.Code != 0 || e.Message != "" {
			b.WriteString(": ")
		}
		b.WriteString(strings.TrimPrefix(e.Err.Error(), "smtpclient: "))
	}
	return b.String()
}

// Unwrap returns the cause (which may join a sentinel and a network error).
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether retrying later may succeed (not Permanent).
func (e *Error) Temporary() bool { return !e.Permanent }

// IsPermanent reports whether err is (or wraps) a permanent *Error.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

func formatEnhanced(c [3]int) string {
	return strconv.Itoa(c[0]) + "." + strconv.Itoa(c[1]) + "." + strconv.Itoa(c[2])
}

// replyError turns a non-success reply into an *Error.
func (c *Conn) replyError(cmd string, r Reply, sentinel error) *Error {
	return &Error{
		Code:      r.Code,
		Enhanced:  r.Enhanced,
		Message:   r.Message,
		Command:   cmd,
		Host:      c.host,
		Permanent: r.Code >= 500,
		Err:       sentinel,
	}
}

// ioError wraps a network/protocol error. The connection becomes unusable.
// When the operation's context is done, its error is joined so that
// errors.Is(err, context.Canceled) works.
func (c *Conn) ioError(cmd string, err error, sentinels ...error) *Error {
	c.usable = false
	var e *Error
	if errors.As(err, &e) && e.Host == c.host && e.Command == cmd && len(sentinels) == 0 {
		return e
	}
	errs := make([]error, 0, 3)
	errs = append(errs, sentinels...)
	errs = append(errs, err)
	if c.opCtx != nil {
		cerr := c.opCtx.Err()
		if cerr == nil && errors.Is(err, os.ErrDeadlineExceeded) && !c.ctxDL.IsZero() && !time.Now().Before(c.ctxDL) {
			// The context's deadline is what expired; its timer may not
			// have fired yet.
			cerr = context.DeadlineExceeded
		}
		if cerr != nil && !errors.Is(err, cerr) {
			errs = append(errs, cerr)
		}
	}
	return &Error{Command: cmd, Host: c.host, Err: joinErrs(errs)}
}

// joinErrs wraps several errors so that errors.Is finds each, with a
// readable "a: b: c" message (errors.Join would use newlines).
func joinErrs(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return &chain{errs: errs}
}

type chain struct{ errs []error }

func (c *chain) Error() string {
	var b strings.Builder
	for i, e := range c.errs {
		if i > 0 {
			b.WriteString(": ")
		}
		b.WriteString(strings.TrimPrefix(e.Error(), "smtpclient: "))
	}
	return b.String()
}

func (c *chain) Unwrap() []error { return c.errs }

// localError is an *Error for a condition detected before anything was sent.
func (c *Conn) localError(cmd string, permanent bool, sentinel error, msg string) *Error {
	return &Error{Command: cmd, Host: c.host, Permanent: permanent, Message: msg, Err: sentinel}
}
