package mailroute

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// bounce is one recipient a delivery status notification reports.
type bounce struct {
	rcpt     string
	err      error
	attempts int
	host     string
	gaveUp   bool
}

// maxReturnedHeaders bounds the original header section quoted in a DSN.
const maxReturnedHeaders = 64 << 10

// sendDSN tells the sender, by an RFC 3464 delivery status notification,
// which queued recipients failed or were given up. Only when Config.DSN is
// set, never to the null sender (a notification is itself sent from the
// null sender, so notifications never loop).
func (m *Mailer) sendDSN(ctx context.Context, qm *QueuedMessage, bounces []bounce, headers []byte, now time.Time) {
	if !m.cfg.DSN || qm.From == "" {
		return
	}
	if qm.RequireTLS {
		// The notification goes without REQUIRETLS (the sender's domain
		// need not offer it, and a notification that cannot arrive tells
		// nobody anything), so it is redacted as RFC 8689 §4.4 asks:
		// the header of a message its sender wanted protected is not
		// returned over a path that may not be.
		headers = nil
	}
	msg := m.composeDSN(qm, bounces, headers, now)
	ctx = context.WithoutCancel(ctx)
	if _, err := m.send(ctx, "", []string{qm.From}, bytes.NewReader(msg), m.relay); err != nil {
		m.cfg.logger().Warn("mailroute: queue: delivery status notification", "to", qm.From, "error", err)
	}
}

// originalHeaders returns the header section of a queued message, if it can
// still be read (the store deletes the body when the last recipient goes).
func (m *Mailer) originalHeaders(ctx context.Context, id string) []byte {
	rc, err := m.queue.store.Body(ctx, id)
	if err != nil {
		return nil
	}
	defer rc.Close()
	var out bytes.Buffer
	r := bufio.NewReader(io.LimitReader(rc, maxReturnedHeaders))
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 || err != nil {
			break
		}
		out.Write(line)
	}
	return out.Bytes()
}

func (m *Mailer) composeDSN(qm *QueuedMessage, bounces []bounce, headers []byte, now time.Time) []byte {
	var b bytes.Buffer
	boundary := randomToken()
	fmt.Fprintf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", m.hostname)
	fmt.Fprintf(&b, "To: <%s>\r\n", qm.From)
	fmt.Fprintf(&b, "Subject: Undelivered Mail Returned to Sender\r\n")
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", randomToken(), m.hostname)
	fmt.Fprintf(&b, "Auto-Submitted: auto-replied\r\n") // RFC 3834: no auto-reply to this
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)

	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", boundary)
	fmt.Fprintf(&b, "This is the mail system at host %s.\r\n\r\n", m.hostname)
	fmt.Fprintf(&b, "Your message could not be delivered to one or more recipients:\r\n\r\n")
	for _, bo := range bounces {
		why := "failed"
		if bo.gaveUp {
			why = fmt.Sprintf("still failing after %d attempts; given up", bo.attempts)
		}
		fmt.Fprintf(&b, "<%s>: %s: %s\r\n", bo.rcpt, why, oneLine(bo.err))
	}

	fmt.Fprintf(&b, "\r\n--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	fmt.Fprintf(&b, "Reporting-MTA: dns; %s\r\n", m.hostname)
	fmt.Fprintf(&b, "Arrival-Date: %s\r\n", qm.Created.Format(time.RFC1123Z))
	for _, bo := range bounces {
		fmt.Fprintf(&b, "\r\nFinal-Recipient: rfc822; %s\r\n", bo.rcpt)
		fmt.Fprintf(&b, "Action: failed\r\n")
		fmt.Fprintf(&b, "Status: %s\r\n", dsnStatus(bo))
		if bo.host != "" {
			fmt.Fprintf(&b, "Remote-MTA: dns; %s\r\n", bo.host)
		}
		var e *Error
		if errors.As(bo.err, &e) && e.Code != 0 {
			fmt.Fprintf(&b, "Diagnostic-Code: smtp; %d %s %s\r\n", e.Code, e.Enhanced, oneLine(errors.New(e.Message)))
		}
		fmt.Fprintf(&b, "Last-Attempt-Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	if len(headers) > 0 {
		fmt.Fprintf(&b, "\r\n--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary)
		b.Write(headers)
	}
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes()
}

// dsnStatus is the RFC 3463 status of a bounce: the server's enhanced code
// when it gave a permanent one, 4.4.7 ("delivery time expired") for a
// give-up, 5.0.0 otherwise.
func dsnStatus(bo bounce) string {
	var e *Error
	if errors.As(bo.err, &e) && e.Enhanced[0] == 5 {
		return e.Enhanced.String()
	}
	if bo.gaveUp {
		return "4.4.7"
	}
	return "5.0.0"
}

func oneLine(err error) string {
	if err == nil {
		return "unknown error"
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}

func randomToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
