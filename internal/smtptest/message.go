package smtptest

import (
	"slices"

	"github.com/emersion/go-smtp"
)

// Message is one mail transaction as the server saw it at the end of DATA.
type Message struct {
	// From is the reverse-path of MAIL FROM, without angle brackets ("" for
	// the null sender <>).
	From string
	// Rcpts are the recipients the server accepted, in order.
	Rcpts []string
	// MailOpts are the MAIL FROM parameters (SIZE, BODY, SMTPUTF8, ...) as
	// go-smtp parsed them.
	MailOpts *smtp.MailOptions
	// RcptOpts are the RCPT TO parameters, one for each of Rcpts.
	RcptOpts []*smtp.RcptOptions
	// Data is the message exactly as received, byte for byte: for DATA
	// after dot-unstuffing, ending with the CRLF before the terminating
	// dot; for BDAT the chunks joined. Bare CR and LF, NUL and 8-bit bytes
	// are kept as they arrived.
	Data []byte
	// Helo is the name the client gave in its last EHLO or HELO.
	Helo string
	// TLS reports whether the connection was under TLS when DATA came.
	TLS bool
	// AuthUser is the user the client authenticated as, "" if it did not.
	AuthUser string
	// AuthMechanism is the SASL mechanism the client authenticated with
	// ("PLAIN", "XOAUTH2", …), "" if it did not.
	AuthMechanism string
	// Conn is the 1-based index, in accept order, of the connection the
	// message came on; it matches the count of [Server.Connections].
	Conn int
	// Code is the reply code the server sent after the final dot: 250 when
	// it accepted the message, the code of a [Options.DataPolicy] rejection
	// or 552 for a message over [Options.MaxMessageBytes] (whose Data then
	// stops at the limit), and 0 when [Options.CloseAfterDot] hung up
	// without a reply.
	Code int
}

// clone returns a deep copy of m, so tests can keep and modify what they are
// given while the server goes on recording.
func (m *Message) clone() *Message {
	c := *m
	c.Rcpts = slices.Clone(m.Rcpts)
	c.Data = slices.Clone(m.Data)
	if m.MailOpts != nil {
		opts := *m.MailOpts
		if opts.Auth != nil {
			auth := *opts.Auth
			opts.Auth = &auth
		}
		c.MailOpts = &opts
	}
	c.RcptOpts = make([]*smtp.RcptOptions, len(m.RcptOpts))
	for i, o := range m.RcptOpts {
		if o == nil {
			continue
		}
		opts := *o
		opts.Notify = slices.Clone(o.Notify)
		if o.DeliverBy != nil {
			by := *o.DeliverBy
			opts.DeliverBy = &by
		}
		if o.MTPriority != nil {
			p := *o.MTPriority
			opts.MTPriority = &p
		}
		c.RcptOpts[i] = &opts
	}
	return &c
}
