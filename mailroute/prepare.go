package mailroute

import (
	"bytes"
	"io"
	"strings"

	"github.com/mailroute/go-mailroute/internal/dkimsign"
	"github.com/mailroute/go-mailroute/internal/message"
)

// prepareBody runs once per message, before routing, so that every path
// carries the same bytes: it is where headers are completed and the DKIM
// signature is added. It returns b itself when there is nothing to do, or
// a new Body the caller also closes.
//
// The new Body is the added text (signatures, Date, Message-ID) followed by
// b's bytes. b is read twice, its header and then all of it to sign,
// through its own readers, and copied once into the new Body; a message
// that spilled to a file streams from file to file.
func (m *Mailer) prepareBody(b *message.Body) (*message.Body, error) {
	// Config.DKIM is checked and normalised for every message: the Mailer
	// keeps no signing state of its own, and a few string checks cost
	// nothing next to a signature. New refuses a bad one earlier
	// (checkDKIM); this keeps a Mailer from ever signing with one.
	keys, err := m.cfg.dkimKeys()
	if err != nil {
		return nil, err
	}
	add := m.cfg.Headers.addMissing(len(keys) > 0)
	if len(keys) == 0 && !add {
		return b, nil
	}
	prefix, err := dkimsign.Prefix(b.Reader, dkimsign.Options{
		Keys:            keys,
		AddDate:         add,
		AddMessageID:    add,
		MessageIDDomain: m.cfg.Headers.MessageIDDomain,
		Hostname:        m.hostname,
	})
	if err != nil || prefix == "" {
		return b, err
	}
	var r io.Reader
	if mem, ok := b.Bytes(); ok {
		// One buffer of the exact size: NewBody then allocates its copy
		// once, at the right size, instead of growing it.
		buf := make([]byte, 0, len(prefix)+len(mem))
		r = bytes.NewReader(append(append(buf, prefix...), mem...))
	} else {
		r = io.MultiReader(strings.NewReader(prefix), b.Reader())
	}
	// No MaxSize: the caller's limit applied to the message as given; the
	// few hundred octets added here must not make it fail.
	return message.NewBody(r, message.BodyOptions{})
}
