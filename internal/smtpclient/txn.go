package smtpclient

import (
	"errors"
	"io"
	"strconv"
)

// txn is the state of one MAIL…DATA (or MAIL…BDAT) transaction over a
// chunk of recipients.
type txn struct {
	c        *Conn
	tx       *Tx
	res      *TxResult
	chunk    []int // indices into tx.Rcpts
	mailRead bool
	mailErr  *Error
	written  int   // RCPT commands written
	read     int   // RCPT replies read
	accepted []int // indices whose RCPT got 2xx
	retry    []int // indices that got 452
	decided  int   // recipients with an outcome other than 452
	// last: DATA or BDAT has been written, so its reply is due after the
	// MAIL and RCPT replies.
	last bool
	// afterData: BDAT LAST and its whole chunk were written, so a reply
	// that does not arrive may be hiding an accepted message.
	afterData bool
}

// transaction runs one transaction for chunk. It returns the recipients to
// try again (452), how many RCPTs were accepted, whether any recipient got
// an outcome other than 452, and an error when the transaction failed as a
// whole.
//
// With bdat (see useBDAT) the transaction ends with one BDAT LAST chunk
// pipelined after the RCPTs instead of DATA; with split as well, the MAIL
// and RCPT replies are read before the chunk is written.
func (c *Conn) transaction(tx *Tx, res *TxResult, chunk []int, hasRest bool, body *bodySource, bdat, split bool) ([]int, int, bool, error) {
	pipelined := c.offers.pipelining
	t := txn{c: c, tx: tx, res: res, chunk: chunk, accepted: c.accBuf[:0]}
	defer func() { c.accBuf = t.accepted[:0] }()

	c.wTimeout = c.to.Mail
	c.writeMail(tx)
	if !pipelined {
		if err := t.sync(); err != nil {
			return nil, 0, false, err
		}
	}
	window := 1
	if pipelined {
		window = pipeWindow
	}
	for _, i := range chunk {
		if t.mailErr != nil {
			break
		}
		c.writeCmd("RCPT TO:<", tx.Rcpts[i], ">")
		t.written++
		if t.written-t.read >= window {
			if err := t.sync(); err != nil {
				return nil, 0, false, err
			}
		}
	}
	if bdat {
		if split {
			if err := t.sync(); err != nil {
				return nil, 0, false, err
			}
		}
		return t.endBDAT(body)
	}
	dataSent := false
	if t.mailErr == nil && (pipelined || len(t.accepted) > 0) {
		c.writeCmd("DATA")
		dataSent = true
		t.last = true
	}
	if err := t.sync(); err != nil {
		return nil, 0, false, err
	}
	var dataRep Reply
	if dataSent {
		var err error
		if dataRep, err = c.readReply("DATA", c.to.DataInit); err != nil {
			return nil, 0, false, err
		}
		if dataRep.Code != 354 && dataRep.Code < 400 {
			// 2xx or another 3xx to DATA answers some other command.
			return nil, 0, false, t.stepFault("DATA", misplaced("DATA", dataRep))
		}
		if c.r.Buffered() > 0 {
			// Nothing may follow the reply to DATA: after 354 the server
			// waits for the data, after a refusal for the next command.
			return nil, 0, false, t.stepFault("DATA", nil)
		}
	}

	if t.mailErr != nil || len(t.accepted) == 0 {
		if dataRep.Code == 354 {
			// A server that opened DATA with nothing to deliver: send an
			// empty message to close it, then reset (RFC 2920 §3.1).
			if err := c.endEmptyData(); err != nil {
				return nil, 0, false, err
			}
		}
		if c.usable {
			c.rset()
		}
		if t.mailErr != nil {
			return nil, len(t.accepted), true, t.mailErr
		}
		return t.retry, 0, t.decided > 0, nil
	}
	if dataRep.Code != 354 {
		e := c.unexpected("DATA", dataRep, nil)
		t.decide(e)
		if c.usable {
			c.rset()
		}
		return nil, len(t.accepted), true, e
	}

	r, err := body.next(hasRest || len(t.retry) > 0)
	if err != nil {
		c.Close() // the server is in DATA mode and we have nothing to send
		return nil, 0, false, &Error{Command: "BODY", Host: c.host, Err: err}
	}
	if err := c.writeBody(r); err != nil {
		return nil, 0, false, err
	}
	t.afterData = true
	rep, err := c.readReplyLost(".", c.to.DataFinal, true)
	if err != nil {
		return nil, 0, false, err
	}
	return t.final(rep)
}

// stepFault ends a transaction whose replies can no longer be attributed
// (see ErrOutOfStep): every recipient of the chunk gets the error, whatever
// its reply seemed to be, and the session is closed.
//
// A refusal of MAIL read before the fault is kept as the cause: the
// recipients stay Deferred, as the fault says nothing can be trusted, but
// the refusal (a relay that wants AUTH first, say) remains readable. A
// server that refuses MAIL and then reads a pipelined chunk as commands
// answers each line, and such a refusal is usually what it meant.
func (t *txn) stepFault(cmd string, cause error) error {
	if t.afterData {
		cmd = "."
	}
	if cause == nil && t.mailErr != nil {
		cause = t.mailErr
	}
	e := t.c.outOfStep(cmd, cause)
	for _, i := range t.chunk {
		t.res.Rcpts[i].Err = e
	}
	return e
}

// final handles the reply to the final "." (or to BDAT LAST) of a
// transaction with accepted recipients. The reply counts only when nothing
// follows it: a further reply means it may have answered another command.
func (t *txn) final(rep Reply) ([]int, int, bool, error) {
	c, res := t.c, t.res
	if rep.Code < 400 && !rep.Positive() {
		return nil, 0, false, t.stepFault(".", c.replyError(".", rep, ErrProtocol))
	}
	if err := c.quietAfterReply(); err != nil {
		if errors.Is(err, ErrOutOfStep) {
			return nil, 0, false, t.stepFault(".", nil)
		}
		// The server closed after its reply: the reply stands, the
		// session is done.
		c.Close()
	}
	res.Data, res.Response = rep, c.replyString(rep)
	if !rep.Positive() {
		e := c.replyError(".", rep, nil)
		if rep.Code == 421 {
			c.usable = false
		}
		t.decide(e)
		return nil, len(t.accepted), true, e
	}
	for _, i := range t.accepted {
		res.Rcpts[i].Err = nil
		res.Accepted = append(res.Accepted, t.tx.Rcpts[i])
	}
	return t.retry, len(t.accepted), true, nil
}

// maxChunk is the largest body sent with BDAT. Larger ones take DATA, whose
// body goes only once a recipient is accepted: BDAT's chunk is written
// before any reply is read, so this bounds what is sent for nothing when
// every recipient is refused.
const maxChunk = 1 << 20

// useBDAT reports whether tx ends its transactions with one BDAT LAST
// chunk (RFC 3030) pipelined after the RCPTs: the server offers CHUNKING
// and PIPELINING, Config.NoChunking is not set, and the body's size is
// known and at most maxChunk.
func (c *Conn) useBDAT(tx *Tx) bool {
	if c.noChunk || tx.Size <= 0 || tx.Size > maxChunk {
		return false
	}
	return c.offers.chunking && c.offers.pipelining
}

// endBDAT ends a pipelined transaction with "BDAT <size> LAST" and the
// body as is (length-delimited: no dot-stuffing, no final dot), written in
// the same flush as MAIL and the RCPTs (unless a window sync came first),
// then reads the MAIL, RCPT and BDAT replies in order: one round trip.
//
// When no recipient was accepted the server answers BDAT with an error
// after consuming the chunk (RFC 3030 §4.2); RSET then ends the
// transaction as on the DATA path. A reply to BDAT LAST when recipients
// were accepted is reported as the reply to the final "." (Command "."),
// and losing the connection once the chunk is written, before the replies
// that could mean delivery, is ErrConnectionLost, as after the final ".".
func (t *txn) endBDAT(body *bodySource) ([]int, int, bool, error) {
	c := t.c
	sent := false
	// After a split, the chunk goes only when a recipient was accepted.
	if t.mailErr == nil && (t.read < t.written || !t.mailRead || len(t.accepted) > 0) {
		// The replies are not known yet, so a body that cannot seek is kept
		// for a further transaction in any case (it is at most maxChunk).
		r, err := body.next(true)
		if err != nil {
			c.Close() // MAIL and the RCPTs may have gone out already
			return nil, 0, false, &Error{Command: "BODY", Host: c.host, Err: err}
		}
		if err := c.writeChunk(r, t.tx.Size); err != nil {
			return nil, 0, false, err
		}
		sent = true
		t.last = true
		t.afterData = true
	}
	if err := t.sync(); err != nil {
		return nil, 0, false, err
	}
	var rep Reply
	if sent {
		var err error
		rep, err = c.readReplyLost("BDAT", c.to.DataFinal, t.mailErr == nil && len(t.accepted) > 0)
		if err != nil {
			return nil, 0, false, err
		}
	}
	if t.mailErr != nil || len(t.accepted) == 0 {
		// The BDAT reply (an error: no valid recipients) decides nothing;
		// a positive one contradicts the replies read before it.
		if sent && (rep.Positive() || rep.Code < 400) {
			return nil, 0, false, t.stepFault("BDAT", misplaced("BDAT", rep))
		}
		if err := c.quiet(); errors.Is(err, ErrOutOfStep) {
			return nil, 0, false, t.stepFault("BDAT", nil)
		} else if err != nil {
			c.Close()
		}
		if c.usable {
			c.rset()
		}
		if t.mailErr != nil {
			return nil, len(t.accepted), true, t.mailErr
		}
		return t.retry, 0, t.decided > 0, nil
	}
	return t.final(rep)
}

// writeChunk writes "BDAT n LAST" and exactly n octets of r, unchanged,
// and flushes. Each flush gets the DataBlock timeout. A body that is not
// n octets long cannot be framed: the connection is closed (the server
// never sees a complete chunk, so nothing is delivered) and the error is
// permanent.
func (c *Conn) writeChunk(r io.Reader, n int64) error {
	c.w.WriteString("BDAT ")
	c.w.Write(strconv.AppendInt(c.w.AvailableBuffer(), n, 10))
	c.w.WriteString(" LAST\r\n")
	c.wTimeout = c.to.DataBlock
	c.chunkR = chunkReader{r: r, n: n}
	_, werr := c.w.ReadFrom(&c.chunkR) // the body is read straight into the write buffer
	cr := c.chunkR
	c.chunkR = chunkReader{}
	src := cr.r
	switch {
	case cr.err != nil:
		c.Close()
		return &Error{Command: "BODY", Host: c.host, Err: &bodyReadError{cr.err}}
	case werr != nil:
		return c.ioError("BODY", werr)
	case cr.n > 0:
		c.Close()
		return c.localError("BODY", true, nil, "the body is "+strconv.FormatInt(n-cr.n, 10)+
			" octets, shorter than Tx.Size ("+strconv.FormatInt(n, 10)+")")
	}
	// The last octets are still buffered: a body longer than announced is
	// refused before the server could take a truncated message.
	k, err := io.ReadAtLeast(src, c.probe[:], 1)
	if k > 0 {
		c.Close()
		return c.localError("BODY", true, nil, "the body is longer than Tx.Size ("+strconv.FormatInt(n, 10)+" octets)")
	}
	if err != io.EOF {
		c.Close()
		return &Error{Command: "BODY", Host: c.host, Err: &bodyReadError{err}}
	}
	return c.flush("BODY", c.to.DataBlock)
}

// chunkReader hands bufio.Writer.ReadFrom at most n octets of r and keeps
// a read error apart from a write error.
type chunkReader struct {
	r   io.Reader
	n   int64 // octets still due
	err error // r's error other than io.EOF
}

func (cr *chunkReader) Read(p []byte) (int, error) {
	if cr.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > cr.n {
		p = p[:cr.n]
	}
	k, err := cr.r.Read(p)
	cr.n -= int64(k)
	if err != nil && err != io.EOF {
		cr.err = err
	}
	return k, err
}

// writeMail buffers the MAIL command with its ESMTP parameters.
func (c *Conn) writeMail(tx *Tx) {
	c.w.WriteString("MAIL FROM:<")
	c.w.WriteString(tx.From)
	c.w.WriteByte('>')
	if tx.EightBit {
		if c.offers.eightBit {
			c.w.WriteString(" BODY=8BITMIME")
		}
		// Without 8BITMIME RFC 6152 asks for a downgrade to 7 bit; the
		// message goes as is, which virtually every server accepts.
	}
	if tx.SMTPUTF8 {
		c.w.WriteString(" SMTPUTF8")
	}
	if tx.REQUIRETLS {
		c.w.WriteString(" REQUIRETLS")
	}
	if c.offers.size && tx.Size > 0 {
		c.w.WriteString(" SIZE=")
		c.w.Write(strconv.AppendInt(c.w.AvailableBuffer(), tx.Size, 10))
	}
	c.w.WriteString("\r\n")
}

// sync flushes what is buffered and reads the outstanding MAIL and RCPT
// replies. A reply of a class no MAIL or RCPT can get (3xx), or bytes
// left once no MAIL or RCPT reply is due and no DATA or BDAT was written,
// put the transaction out of step.
func (t *txn) sync() error {
	c := t.c
	if err := c.flush("MAIL", c.to.Mail); err != nil {
		return err
	}
	if !t.mailRead {
		rep, err := c.readReplyLost("MAIL", c.to.Mail, t.afterData)
		if err != nil {
			return err
		}
		t.mailRead = true
		if rep.Code < 400 && !rep.Positive() {
			return t.stepFault("MAIL", misplaced("MAIL", rep))
		}
		if !rep.Positive() {
			t.mailErr = c.unexpected("MAIL", rep, nil)
			for _, i := range t.chunk {
				t.res.Rcpts[i].Err = t.mailErr
			}
			if !c.usable {
				// A 421: the server is closing, so nothing may follow it.
				if c.r.Buffered() > 0 {
					return t.stepFault("MAIL", nil)
				}
				return t.mailErr
			}
		}
	}
	for t.read < t.written {
		i := t.chunk[t.read]
		rep, err := c.readReplyLost("RCPT", c.to.Rcpt, t.afterData && t.mailErr == nil)
		if err != nil {
			return err
		}
		t.read++
		if rep.Code < 400 && !rep.Positive() {
			return t.stepFault("RCPT", misplaced("RCPT", rep))
		}
		r := &t.res.Rcpts[i]
		r.Reply = rep
		switch {
		case t.mailErr != nil:
			// r.Err is already the MAIL error.
		case rep.Positive():
			t.accepted = append(t.accepted, i)
			t.decided++
		case rep.Code == 452:
			r.Err = c.replyError("RCPT", rep, nil)
			t.retry = append(t.retry, i)
		default:
			r.Err = c.unexpected("RCPT", rep, nil)
			t.decided++
			if !c.usable {
				if c.r.Buffered() > 0 { // nothing may follow a 421
					return t.stepFault("RCPT", nil)
				}
				return r.Err
			}
		}
	}
	if !t.last && c.r.Buffered() > 0 {
		return t.stepFault("RCPT", nil)
	}
	return nil
}

// decide gives err to the recipients accepted in this transaction.
func (t *txn) decide(err error) {
	for _, i := range t.accepted {
		t.res.Rcpts[i].Err = err
	}
}

// writeBody writes the dot-stuffed body and the final "." and flushes.
// Each flush gets the DataBlock timeout.
func (c *Conn) writeBody(r io.Reader) error {
	c.wTimeout = c.to.DataBlock
	c.dw.reset(c.w)
	if _, ok := r.(io.WriterTo); !ok && c.copyBuf == nil {
		c.copyBuf = make([]byte, 8192)
	}
	err := c.dw.copyBody(r, c.copyBuf)
	if err == nil {
		err = c.dw.close()
	}
	if err == nil {
		err = c.w.Flush()
	}
	c.dw.w = nil
	if err != nil {
		return c.ioError("BODY", err)
	}
	return nil
}

// endEmptyData terminates a DATA that should not have been opened.
func (c *Conn) endEmptyData() error {
	c.writeCmd(".")
	if err := c.flush(".", c.to.DataBlock); err != nil {
		return err
	}
	_, err := c.readReply(".", c.to.DataFinal)
	return err
}

// rset ends a failed transaction. A failure makes the connection unusable
// but is not reported: the transaction's outcome is already known.
func (c *Conn) rset() {
	rep, err := c.cmd("RSET", c.to.Command, "RSET")
	if err == nil && (!rep.Positive() || c.r.Buffered() > 0) {
		c.usable = false
	}
}
