package mailroute

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

type requireTLSKey struct{}

// WithREQUIRETLS returns a context that marks the messages sent with it
// as requiring TLS (RFC 8689 REQUIRETLS): each goes only over TLS whose
// server was authenticated — by DANE, by an MTA-STS policy naming the MX
// host, or the relay by its configured name — to a server that offers
// REQUIRETLS, with the REQUIRETLS MAIL parameter so that the next hops
// honour it too. Where no such hop exists the recipient is deferred with
// ErrREQUIRETLS, never sent otherwise. With a Config.Queue the deferred
// recipients are queued with the mark (QueuedMessage.RequireTLS): every
// retry is held to the same rules, and a recipient still without such a
// hop when RetryPolicy.MaxAge ends is given up (EventGaveUp with
// ErrREQUIRETLS; with Config.DSN, a notification that leaves out the
// message's header, as RFC 8689 §4.4 asks of one sent without
// REQUIRETLS). Mailer.Enqueue with such a context queues the message
// with the mark. A "TLS-Required: No" header field in such a message is
// ignored (RFC 8689 §5).
func WithREQUIRETLS(ctx context.Context) context.Context {
	return context.WithValue(ctx, requireTLSKey{}, true)
}

func requiresTLS(ctx context.Context) bool {
	v, _ := ctx.Value(requireTLSKey{}).(bool)
	return v
}

// tlsRequiredNo reports whether the message's header has "TLS-Required:
// No" (RFC 8689 §5): its sender prefers delivery over the recipient
// domain's DANE or MTA-STS policy, so the policy is not enforced.
func (j *job) tlsRequiredNo() bool {
	if j.noTLSReq == 0 {
		j.noTLSReq = 2
		if b, ok := j.body.Bytes(); ok {
			if headerBytesSayTLSRequiredNo(b) {
				j.noTLSReq = 1
			}
		} else if headerSaysTLSRequiredNo(j.body.Reader()) {
			j.noTLSReq = 1
		}
	}
	return j.noTLSReq == 1
}

// headerSaysTLSRequiredNo scans a canonical message's header section.
func headerSaysTLSRequiredNo(r interface{ Read([]byte) (int, error) }) bool {
	br := bufio.NewReaderSize(r, 1024)
	for {
		line, err := br.ReadSlice('\n')
		text := bytes.TrimRight(line, "\r\n")
		if len(text) == 0 {
			return false // the end of the header, or of the message
		}
		if name, value, ok := bytes.Cut(text, []byte(":")); ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("TLS-Required")) {
			return bytes.EqualFold(bytes.TrimSpace(value), []byte("No"))
		}
		if err != nil && err != bufio.ErrBufferFull {
			return false
		}
	}
}

// headerBytesSayTLSRequiredNo is headerSaysTLSRequiredNo for a message in
// memory, scanned in place: no reader, no buffer, no allocation per message.
// The header ends at the first empty line ("" or a lone CR before the LF).
func headerBytesSayTLSRequiredNo(msg []byte) bool {
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return false
		}
		text := bytes.TrimRight(line, "\r")
		if name, value, ok := bytes.Cut(text, []byte(":")); ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("TLS-Required")) {
			return bytes.EqualFold(bytes.TrimSpace(value), []byte("No"))
		}
	}
	return false
}

// relayREQUIRETLS refuses the relay for a REQUIRETLS message when its
// session is not verified or it does not offer REQUIRETLS.
func relayREQUIRETLS(j *job, c *smtpclient.Conn, level TLSProtection) *Error {
	if !j.requireTLS {
		return nil
	}
	if !c.IsTLS() || !level.authenticated() {
		return &Error{Command: "MAIL", Host: c.Host(), Err: fmt.Errorf("%w: the relay's TLS is not verified", ErrREQUIRETLS)}
	}
	if _, ok := c.Extension("REQUIRETLS"); !ok {
		return &Error{Command: "MAIL", Host: c.Host(), Err: fmt.Errorf("%w: the relay %s does not offer REQUIRETLS", ErrREQUIRETLS, c.Host())}
	}
	return nil
}

var defaultLookupTXT = net.DefaultResolver.LookupTXT
