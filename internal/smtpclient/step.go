package smtpclient

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"syscall"
	"time"
)

// Reply accounting. The client always knows how many replies it awaits:
// one per command written, no more. Bytes that arrive when no reply is
// due — an unsolicited or doubled reply line, a reply written after a
// final one, anything waiting on a session between transactions — mean
// the server and the client no longer agree on which reply answers which
// command, so no reply of the transaction can be trusted: the session is
// out of step. The transaction's recipients are then reported with
// ErrOutOfStep (temporary), never Delivered or Failed on a reply that
// may belong to another command, and the session is closed.
//
// The checks cost no round trip: the read buffer must be empty whenever
// every awaited reply has been read, and at the end of a transaction and
// before the next one, a read with a deadline already past tells, without
// waiting, whether bytes or the server's close are waiting on the socket.

// defaultSplitAfterIdle is Config.SplitAfterIdle's zero value.
const defaultSplitAfterIdle = time.Second

// errIdleClosed: the server closed a session that was waiting between
// transactions (an idle timeout, or a server that ends every session after
// one message).
var errIdleClosed = errors.New("the server closed the session while it was idle")

// peekState is what peekSocket keeps between calls.
type peekState struct {
	rc  syscall.RawConn
	fn  func(fd uintptr)
	n   int
	err error
	// looks counts the looks at the socket, for the tests that hold
	// each path to its number of system calls.
	looks int
}

// sockState is what a non-blocking look at the socket found.
type sockState uint8

const (
	sockUnknown sockState = iota // the connection cannot be looked at
	sockEmpty                    // nothing has arrived
	sockData                     // bytes are waiting
	sockClosed                   // the peer closed or reset the connection
)

// tlsSettle bounds the read that tells, on a TLS session, whether the
// bytes waiting on the socket are application data or a TLS message the
// client handles by itself (a session ticket, a key update). The record is
// already arriving, so this is only paid when bytes were seen.
const tlsSettle = 50 * time.Millisecond

// quiet reports what waits on a session from which no reply is due: nil
// when nothing does, ErrOutOfStep when bytes do, and errIdleClosed when the
// server has closed the connection. It does not wait for anything that has
// not yet arrived.
func (c *Conn) quiet() error {
	if c.r.Buffered() > 0 {
		return ErrOutOfStep
	}
	switch c.peekSocket() {
	case sockEmpty, sockUnknown:
		return nil
	case sockClosed:
		return errIdleClosed
	}
	if !c.isTLS {
		return ErrOutOfStep
	}
	c.rTimeout = tlsSettle // the read below waits no longer
	_, err := c.r.Peek(1)
	switch {
	case err == nil:
		return ErrOutOfStep
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil // a TLS message, not a reply
	case err == io.EOF:
		return errIdleClosed
	}
	return err
}

// quietAfterReply is quiet for the moment a transaction's last reply has
// been read, merged with the read that brought it where it can be. On a
// plaintext TCP session that read, when it returned less than the buffer
// could take, emptied the socket's receive queue: Linux's TCP hands over
// everything queued up to the length asked (peek_recv_linux.go). With
// nothing left in the buffer either, nothing had followed the reply when
// it arrived — what a look at the socket would say, asked a moment
// earlier and without a system call. Bytes that arrive later, and a
// close, are found by the look before the next transaction
// (checkBeforeUse), before anything is written. Otherwise (TLS, a read
// that filled the buffer, a connection of another kind) the socket is
// looked at.
func (c *Conn) quietAfterReply() error {
	if c.drained && c.r.Buffered() == 0 {
		return nil
	}
	return c.quiet()
}

// outOfStep is the error for every recipient of a transaction whose
// replies can no longer be attributed. cmd is where it was found: "." once
// the message data (or BDAT's chunk) has gone out, since the server may
// have accepted the message. The session is closed.
func (c *Conn) outOfStep(cmd string, cause error) *Error {
	c.Close()
	errs := []error{ErrOutOfStep}
	if cause != nil && cause != ErrOutOfStep {
		errs = append(errs, cause)
	}
	return &Error{Command: cmd, Host: c.host, Err: joinErrs(errs)}
}

// misplaced describes a reply no command in its place can get.
func misplaced(cmd string, rep Reply) error {
	return protocolErrorf("reply %q where the reply to %s was due", rep.String(), cmd)
}

// checkBeforeUse runs at the start of Send: a session on which the server
// sent something unasked, or which it closed while idle, is unusable
// before anything is written, so the transaction can go on a new session
// with certainty that nothing was accepted (see Retryable).
func (c *Conn) checkBeforeUse() error {
	if !c.usable {
		return c.localError("MAIL", false, ErrUnusable, "")
	}
	err := c.quiet()
	if err == nil {
		return nil
	}
	c.Close()
	return &Error{Command: "MAIL", Host: c.host, Err: joinErrs([]error{ErrUnusable, err})}
}

// splitDue reports whether the next transaction must wait for the MAIL
// and RCPT replies before sending BDAT's chunk, because the session has
// been idle long enough for the server to be closing it (see the package
// doc: the one ambiguity of a single write).
func (c *Conn) splitDue() bool {
	if c.splitAfterIdle < 0 {
		return true
	}
	return time.Since(c.lastUse) >= c.splitAfterIdle
}

// Retryable reports whether err ended a transaction at a point where the
// server cannot have accepted the message: the connection failed, or a
// 421 came, before the end of the data (or before BDAT's chunk was
// complete), or the session was found closed or out of step before
// anything was written. The same transaction may then be sent again on a
// new session without risking a duplicate. Errors after the end of data
// (Command "."), permanent errors, local refusals, a failed body reader
// and a done context are not retryable.
func Retryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.Permanent {
		return false
	}
	switch e.Command {
	case "MAIL", "RCPT", "DATA", "BDAT", "BODY":
	default:
		return false
	}
	var br *bodyReadError
	if errors.As(err, &br) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, ErrUnusable) || errors.Is(err, ErrOutOfStep) {
		return true
	}
	return e.Code == 421 || e.Code == 0 && e.Message == "" && e.Err != nil
}

// injectedPlaintext reports whether a failed STARTTLS handshake met an
// SMTP reply instead of a TLS record: a reply the server wrote after its
// 220 that arrived too late for the buffered-bytes check. Both cases are
// the same fault, so both are a protocol error, never a TLS failure that
// could lead to a retry in plaintext.
func injectedPlaintext(err error) bool {
	var rh tls.RecordHeaderError
	if !errors.As(err, &rh) {
		return false
	}
	h := rh.RecordHeader
	return h[0] >= '1' && h[0] <= '5' && h[1] >= '0' && h[1] <= '9' && h[2] >= '0' && h[2] <= '9' &&
		(h[3] == ' ' || h[3] == '-' || h[3] == '\r')
}
