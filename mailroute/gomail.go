package mailroute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	netmail "net/mail"

	"github.com/wneessen/go-mail"
)

// SendMsg sends messages built with github.com/wneessen/go-mail, each as
// Send would, in order. The envelope comes from the message: the sender is
// its envelope-from (Msg.EnvelopeFrom) or else its first From address, the
// recipients are its To, Cc and Bcc addresses. Bcc recipients get the
// message but never see a Bcc header: go-mail does not write one, and any
// Bcc header field the message would carry anyway (one set with
// SetGenHeader, say) is removed before sending. Each address is checked
// as Send checks it, as the caller wrote it (the Address field of
// go-mail's net/mail.Address): one Send would refuse makes the message
// fail with Send's error, nothing sent. (A quoted local part, which
// go-mail stores unquoted, is therefore refused too: such mailboxes are
// rare, and delivering to a rewritten one is worse.)
//
// The Result lists the recipients of every message, message after message.
// The error is nil exactly when every recipient of every message was
// delivered; otherwise it joins the errors, each naming its message by its
// place in msgs (1, 2, …) and wrapping that message's *SendError. A message that cannot be sent at all (no sender,
// no recipients, a nil *mail.Msg) contributes an error and no recipients;
// the others are still sent.
func (m *Mailer) SendMsg(ctx context.Context, msgs ...*mail.Msg) (*Result, error) {
	res := &Result{}
	var errs []error
	for i, msg := range msgs {
		r, err := m.sendMsg(ctx, msg)
		if r != nil {
			res.Recipients = append(res.Recipients, r.Recipients...)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("message %d: %w", i+1, err))
		}
	}
	return res, errors.Join(errs...)
}

// sendMsg sends one go-mail message.
func (m *Mailer) sendMsg(ctx context.Context, msg *mail.Msg) (*Result, error) {
	if msg == nil {
		return nil, errors.New("mailroute: nil *mail.Msg")
	}
	from := firstAddress(msg.GetAddrHeader(mail.HeaderEnvelopeFrom))
	if from == nil {
		from = firstAddress(msg.GetFrom())
	}
	if from == nil {
		return nil, fmt.Errorf("mailroute: sender: %w", mail.ErrNoFromAddress)
	}
	var to []string
	for _, h := range []mail.AddrHeader{mail.HeaderTo, mail.HeaderCc, mail.HeaderBcc} {
		for _, a := range msg.GetAddrHeader(h) {
			if a != nil {
				to = append(to, a.Address)
			}
		}
	}
	if len(to) == 0 {
		return nil, fmt.Errorf("mailroute: recipients: %w", mail.ErrNoRcptAddresses)
	}
	return m.send(ctx, from.Address, to, &msgSource{msg: msg}, m.relay)
}

// firstAddress returns the first non-nil address of a header, or nil.
//
// The envelope is taken from each net/mail.Address's Address field, the
// mailbox as the caller gave it, and checked by Send's own RFC 5321 parser;
// never from go-mail's formatted strings: formatting quotes whatever is not
// a plain local part, which turns a malformed address into a different,
// valid one ("a b@c.com" into "\"a b\"@c.com", "@evil.com:a@b.com" into
// "\"@evil.com:a\"@b.com") and drops a NUL, so the mail would go to a
// mailbox nobody named.
func firstAddress(list []*netmail.Address) *netmail.Address {
	for _, a := range list {
		if a != nil {
			return a
		}
	}
	return nil
}

// msgSource is a go-mail message as the io.Reader Send reads. It writes
// itself (io.WriterTo), which Send prefers: go-mail then renders straight
// into Send's canonical copy of the message, through the Bcc filter, with
// no buffer of its own. Read, for readers that cannot use WriteTo, renders
// the message into a buffer first.
type msgSource struct {
	msg *mail.Msg
	buf *bytes.Buffer
}

func (s *msgSource) WriteTo(w io.Writer) (int64, error) {
	f := &bccFilter{w: w}
	_, err := s.msg.WriteTo(f)
	if err == nil {
		err = f.flush()
	}
	return f.n, err
}

func (s *msgSource) Read(p []byte) (int, error) {
	if s.buf == nil {
		s.buf = new(bytes.Buffer)
		if _, err := s.WriteTo(s.buf); err != nil {
			return 0, err
		}
	}
	return s.buf.Read(p)
}

// bccFilter passes a message through, minus any Bcc header field (with its
// folded continuation lines). It holds back one header line at a time, to
// see its field name; after the header section it holds back nothing.
type bccFilter struct {
	w    io.Writer
	n    int64  // octets written to w
	line []byte // the header line being read
	body bool   // past the blank line that ends the header section
	skip bool   // in a Bcc field: its continuation lines go too
}

func (f *bccFilter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 && !f.body {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			f.line = append(f.line, p...)
			return total, nil
		}
		f.line = append(f.line, p[:i+1]...)
		p = p[i+1:]
		if err := f.endLine(); err != nil {
			return 0, err
		}
	}
	if len(p) > 0 {
		if err := f.write(p); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// endLine decides the fate of one complete header line.
func (f *bccFilter) endLine() error {
	line := f.line
	f.line = f.line[:0]
	switch {
	case len(bytes.TrimRight(line, "\r\n")) == 0:
		f.body = true
		f.skip = false
	case line[0] == ' ' || line[0] == '\t':
		// A continuation line belongs to the field above.
	default:
		f.skip = isBccField(line)
	}
	if f.skip {
		return nil
	}
	return f.write(line)
}

// flush writes a last header line that had no line end.
func (f *bccFilter) flush() error {
	if len(f.line) == 0 {
		return nil
	}
	return f.endLine()
}

func (f *bccFilter) write(p []byte) error {
	n, err := f.w.Write(p)
	f.n += int64(n)
	return err
}

// isBccField reports whether a header line starts a Bcc field: the name
// "Bcc" in any case, optionally followed by white space, then a colon
// (RFC 5322 §3.6.3; the space is the obsolete syntax of §4.5.3).
func isBccField(line []byte) bool {
	name, _, ok := bytes.Cut(line, []byte(":"))
	return ok && bytes.EqualFold(bytes.TrimRight(name, " \t"), []byte("bcc"))
}
