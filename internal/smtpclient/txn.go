package smtpclient

import (
	"io"
	"strconv"
)

// txn is the state of one MAIL…DATA transaction over a chunk of recipients.
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
}

// transaction runs one transaction for chunk. It returns the recipients to
// try again (452), how many RCPTs were accepted, whether any recipient got
// an outcome other than 452, and an error when the transaction failed as a
// whole.
func (c *Conn) transaction(tx *Tx, res *TxResult, chunk []int, hasRest bool, body *bodySource) ([]int, int, bool, error) {
	_, pipelined := c.ext["PIPELINING"]
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
	dataSent := false
	if t.mailErr == nil && (pipelined || len(t.accepted) > 0) {
		c.writeCmd("DATA")
		dataSent = true
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
	c.setReadDeadline(c.to.DataFinal)
	rep, buf, err := readReply(c.r, c.scratch)
	c.scratch = buf[:0]
	if err != nil {
		return nil, 0, false, c.ioError(".", err, ErrConnectionLost)
	}
	if rep.Code == 421 {
		c.usable = false
	}
	res.Data = rep
	if !rep.Positive() {
		var e *Error
		if rep.Code < 400 {
			e = c.unexpected(".", rep, joinErrs([]error{ErrConnectionLost, ErrProtocol}))
		} else {
			e = c.replyError(".", rep, nil)
		}
		t.decide(e)
		return nil, len(t.accepted), true, e
	}
	for _, i := range t.accepted {
		res.Rcpts[i].Err = nil
		res.Accepted = append(res.Accepted, tx.Rcpts[i])
	}
	return t.retry, len(t.accepted), true, nil
}

// writeMail buffers the MAIL command with its ESMTP parameters.
func (c *Conn) writeMail(tx *Tx) {
	c.w.WriteString("MAIL FROM:<")
	c.w.WriteString(tx.From)
	c.w.WriteByte('>')
	if tx.EightBit {
		if _, ok := c.ext["8BITMIME"]; ok {
			c.w.WriteString(" BODY=8BITMIME")
		}
		// Without 8BITMIME RFC 6152 asks for a downgrade to 7 bit; the
		// message goes as is, which virtually every server accepts.
	}
	if tx.SMTPUTF8 {
		c.w.WriteString(" SMTPUTF8")
	}
	if _, ok := c.ext["SIZE"]; ok && tx.Size > 0 {
		c.w.WriteString(" SIZE=")
		c.w.Write(strconv.AppendInt(c.w.AvailableBuffer(), tx.Size, 10))
	}
	c.w.WriteString("\r\n")
}

// sync flushes what is buffered and reads the outstanding MAIL and RCPT
// replies.
func (t *txn) sync() error {
	c := t.c
	if err := c.flush("MAIL", c.to.Mail); err != nil {
		return err
	}
	if !t.mailRead {
		rep, err := c.readReply("MAIL", c.to.Mail)
		if err != nil {
			return err
		}
		t.mailRead = true
		if !rep.Positive() {
			t.mailErr = c.unexpected("MAIL", rep, nil)
			for _, i := range t.chunk {
				t.res.Rcpts[i].Err = t.mailErr
			}
			if !c.usable {
				return t.mailErr
			}
		}
	}
	for t.read < t.written {
		i := t.chunk[t.read]
		rep, err := c.readReply("RCPT", c.to.Rcpt)
		if err != nil {
			return err
		}
		t.read++
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
				return r.Err
			}
		}
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
	if err == nil && !rep.Positive() {
		c.usable = false
	}
}
