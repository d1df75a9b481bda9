package smtpclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
)

// Tx is one message to send: an envelope and a canonical body.
type Tx struct {
	From  string   // reverse-path without brackets, validated by the caller; "" = null sender <>
	Rcpts []string // forward-paths without brackets, validated by the caller
	// Body is the canonical message: CRLF line endings, no bare CR or LF,
	// ending with CRLF. With DATA, Send does the dot-stuffing and the final
	// "."; with BDAT (see Send) the octets go exactly as they are, so a
	// bare LF or CR would reach the server as such. When the recipients
	// need more than one transaction (see Send) the body is sent again: an
	// io.Seeker is rewound, any other reader is buffered (always, with
	// BDAT).
	Body io.Reader
	// Size is the body's size in octets, for SIZE= (RFC 1870) and BDAT;
	// 0 = unknown. When set it must be exact: with BDAT a body of any
	// other length fails the Send with a permanent "BODY" error and the
	// connection is closed, nothing delivered.
	Size     int64
	EightBit bool // BODY=8BITMIME when offered (RFC 6152); sent as is otherwise
	SMTPUTF8 bool // SMTPUTF8 (RFC 6531); the server must offer it
	// REQUIRETLS adds the RFC 8689 MAIL parameter. The caller checks that
	// the session is verified TLS and that the server offers REQUIRETLS.
	REQUIRETLS bool
}

// RcptResult is the outcome for one recipient.
type RcptResult struct {
	Rcpt  string
	Reply Reply // the reply to RCPT (zero when RCPT was never answered)
	// Err is nil when the message was delivered to this recipient: RCPT
	// accepted and the reply to the final "." positive. Otherwise it is the
	// *Error that decided: the RCPT, MAIL, DATA or final reply, or the
	// network error. Temporary errors (4xx, network, 452 recipient limit)
	// are worth retrying later.
	Err error
}

// TxResult holds the per-recipient outcomes of Send.
type TxResult struct {
	Rcpts []RcptResult // one per Tx.Rcpts, same order
	Data  Reply        // the reply to the final "." of the last transaction that got that far
	// Response is Data.String(), set with Data. The session's previous
	// one is reused when the reply is the same, as a server's "250 2.0.0
	// Ok" usually is.
	Response string
	Accepted []string // the recipients delivered (Err == nil), in order
}

// errUndecided marks a recipient whose outcome is not known yet; it never
// leaves Send.
var errUndecided = errors.New("recipient not attempted")

// pipeWindow bounds how many commands are written before their replies are
// read, so neither side's socket buffer can fill up and deadlock.
const pipeWindow = 100

// Send runs mail transactions for tx and reports every recipient's outcome.
//
// With PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go out in one write
// and the replies are read in order; without it, lock-step, with DATA only
// after an accepted RCPT. A transaction in which no recipient was accepted
// ends with RSET and the connection stays usable.
//
// With CHUNKING (RFC 3030) as well as PIPELINING, when Config.NoChunking is
// not set and Size is known (> 0) and at most 1 MiB, the transaction ends
// with "BDAT <Size> LAST" and the body, not dot-stuffed, written in the same
// flush as MAIL and the RCPTs; then the MAIL, RCPT and BDAT replies are
// read in order: one round trip instead of two. The reply to BDAT LAST is
// reported as the final reply: TxResult.Data, and an error with Command "."
// (as for the final "." of DATA); a connection lost once the chunk is
// written, before a reply that could mean delivery, is ErrConnectionLost
// with Command ".". When every recipient was refused the server refuses
// BDAT after consuming the chunk, and RSET follows as with DATA. Bodies of
// unknown size or above 1 MiB keep DATA.
//
// Recipients refused with 452 (too many recipients, RFC 5321
// §4.5.3.1.10) are sent in a further transaction on the same connection
// after the first one completes, until all are done or a transaction makes
// no progress (they then keep their temporary 452 error). Later
// transactions carry no more recipients than the server took in the first;
// when the server advertises LIMITS RCPTMAX (RFC 9422), transactions are cut
// to that size from the start.
//
// The returned error is nil unless something failed for the transaction as
// a whole (a local check, MAIL, DATA, the body, the final reply, the
// connection); that error is then also the Err of every recipient it
// decided. The *TxResult is always complete, one entry per recipient, even
// when the error is non-nil. Checks done before anything is written: an
// address with CR, LF, NUL, '<' or '>' (ErrInvalidAddress), SMTPUTF8 not
// offered (ErrSMTPUTF8Unsupported), Size above the server's SIZE
// (ErrSizeExceeded).
func (c *Conn) Send(ctx context.Context, tx *Tx) (*TxResult, error) {
	return c.SendInto(ctx, tx, new(TxResult))
}

// SendInto is Send with the result written into res, whose slices are
// reused when large enough: a caller that sends message after message with
// one TxResult allocates none. res is returned; whatever it held before is
// overwritten, so the caller must be done with it.
func (c *Conn) SendInto(ctx context.Context, tx *Tx, res *TxResult) (*TxResult, error) {
	rcpts := res.Rcpts[:0]
	if cap(rcpts) < len(tx.Rcpts) {
		rcpts = make([]RcptResult, len(tx.Rcpts))
	}
	*res = TxResult{Rcpts: rcpts[:len(tx.Rcpts)], Accepted: res.Accepted[:0]}
	for i, r := range tx.Rcpts {
		res.Rcpts[i] = RcptResult{Rcpt: r, Err: errUndecided}
	}
	if err := c.precheck(ctx, tx); err != nil {
		return res, res.failAll(err)
	}
	c.begin(ctx)
	defer c.end()
	if err := c.checkBeforeUse(); err != nil {
		return res, res.failAll(err)
	}
	// Only the first transaction can follow an idle period.
	split := c.splitDue()

	body := bodySource{r: tx.Body}
	if body.r == nil {
		body.r = bytes.NewReader(nil)
	}
	if s, ok := body.r.(io.Seeker); ok {
		if pos, err := s.Seek(0, io.SeekCurrent); err == nil {
			body.seeker, body.start = s, pos
		}
	}
	pending := c.pendBuf[:0]
	for i := range tx.Rcpts {
		pending = append(pending, i)
	}
	c.pendBuf = pending[:0] // kept for the next Send; nothing else uses it meanwhile
	bdat := c.useBDAT(tx)
	limit := c.limitRcp
	if c.ignoreLimits {
		limit = 0
	}
	for first := true; len(pending) > 0; first = false {
		if !first {
			// The last transaction may have left the session unusable
			// (a reply after RSET's, say) or something waiting on it.
			if err := c.checkBeforeUse(); err != nil {
				return res, res.failAll(err)
			}
		}
		chunk, rest := pending, []int(nil)
		if limit > 0 && len(chunk) > limit {
			chunk, rest = pending[:limit], pending[limit:]
		}
		retry, accepted, progress, err := c.transaction(tx, res, chunk, len(rest) > 0, &body, bdat, split)
		split = false
		if err != nil {
			return res, res.failAll(err)
		}
		if len(retry) > 0 && accepted > 0 && (limit == 0 || accepted < limit) {
			// The server's limit is now known: later transactions of this
			// Send carry no more recipients than it took.
			limit = accepted
		}
		if !progress {
			// Every recipient got 452: the server takes no more now.
			for _, i := range rest {
				res.Rcpts[i].Err = res.Rcpts[chunk[0]].Err
			}
			break
		}
		pending = append(retry, rest...)
	}
	return res, nil
}

// failAll gives err to every recipient not yet decided (or deferred by a
// 452) and returns err. A server's permanent refusal of a transaction
// (5xx to MAIL, DATA or the end of data) is not a refusal of recipients
// that were not in it: those keep their 452, or, never attempted, are
// deferred.
func (res *TxResult) failAll(err error) error {
	e, _ := err.(*Error)
	refusal := e != nil && e.Code >= 500
	for i := range res.Rcpts {
		r := &res.Rcpts[i]
		switch {
		case refusal && is452(r.Err):
		case refusal && r.Err == errUndecided:
			r.Err = &Error{Command: e.Command, Host: e.Host, Err: errNotAttempted}
		case r.Err == errUndecided || is452(r.Err):
			r.Err = err
		}
	}
	return err
}

// errNotAttempted: a recipient left for a later transaction of the same
// Send when an earlier one was refused as a whole.
var errNotAttempted = errors.New("not attempted: the server refused an earlier transaction of this message")

func is452(err error) bool {
	e, ok := err.(*Error)
	return ok && e.Code == 452 && e.Command == "RCPT"
}

// precheck refuses, before anything is written, what cannot be sent.
func (c *Conn) precheck(ctx context.Context, tx *Tx) error {
	if !c.usable {
		return c.localError("MAIL", false, ErrUnusable, "")
	}
	if err := ctx.Err(); err != nil {
		return &Error{Command: "MAIL", Host: c.host, Err: err}
	}
	if !validPath(tx.From) {
		return c.localError("MAIL", true, ErrInvalidAddress, strconv.Quote(tx.From))
	}
	if len(tx.Rcpts) == 0 {
		return c.localError("RCPT", true, nil, "no recipients")
	}
	for _, r := range tx.Rcpts {
		if r == "" || !validPath(r) {
			return c.localError("RCPT", true, ErrInvalidAddress, strconv.Quote(r))
		}
	}
	if tx.SMTPUTF8 {
		if !c.offers.smtputf8 {
			return c.localError("MAIL", true, ErrSMTPUTF8Unsupported,
				"the message needs SMTPUTF8 (internationalized addresses or headers) and "+c.host+" does not offer it")
		}
	}
	if max := c.MaxSize(); max > 0 && tx.Size > max {
		e := c.localError("MAIL", true, ErrSizeExceeded,
			"message of "+strconv.FormatInt(tx.Size, 10)+" octets exceeds the server's limit of "+strconv.FormatInt(max, 10))
		e.Enhanced = [3]int{5, 3, 4}
		return e
	}
	return nil
}

// validPath is defence in depth: the caller validated the address, but
// nothing that could break out of "<...>" or the command line is written.
// A table, not strings.ContainsAny, which builds its set on every call:
// this runs for every address of every message.
func validPath(s string) bool {
	for i := 0; i < len(s); i++ {
		if pathStop[s[i]] {
			return false
		}
	}
	return true
}

// pathStop marks the octets validPath refuses.
var pathStop = [256]bool{'\r': true, '\n': true, 0: true, '<': true, '>': true}

// bodySource hands out the body once per transaction.
type bodySource struct {
	r      io.Reader
	seeker io.Seeker
	start  int64
	saved  *bytes.Buffer
	used   bool
}

// next returns the body for a transaction. again says whether another
// transaction may need it later, so a non-seekable body is buffered.
func (b *bodySource) next(again bool) (io.Reader, error) {
	if !b.used {
		b.used = true
		if again && b.seeker == nil {
			b.saved = new(bytes.Buffer)
			return io.TeeReader(b.r, b.saved), nil
		}
		return b.r, nil
	}
	if b.seeker != nil {
		_, err := b.seeker.Seek(b.start, io.SeekStart)
		return b.r, err
	}
	if b.saved != nil {
		return bytes.NewReader(b.saved.Bytes()), nil
	}
	return nil, errors.New("the body cannot be read a second time")
}
