// Package smtpclient is the SMTP client engine of mailroute: one session
// (RFC 5321) that serves both transports, direct delivery to an MX host on
// port 25 and submission through an authenticated smarthost.
//
// It speaks SMTP itself over a net.Conn rather than using go-smtp's client,
// because that client clears the connection deadline after every command
// and writes the body without one, has no exported StartTLS (so
// opportunistic TLS on an existing session is impossible), re-sends EHLO on
// Reset, cannot pipeline, and writes addresses unvalidated. SASL mechanisms
// come from github.com/emersion/go-sasl (PLAIN, LOGIN) plus CRAM-MD5 here;
// the tests run against go-smtp's server on loopback.
//
// A session, as Dial and Send run it:
//
//  1. connect; TLS first when the mode is TLSImplicit (RFC 8314);
//  2. read the greeting (multi-line allowed); 220 or an *Error;
//  3. EHLO (HELO when EHLO gets 500/502), extensions keyed upper-case;
//  4. STARTTLS (RFC 3207): opportunistic and unverified (RFC 7435), or
//     required and verified; then EHLO again;
//  5. AUTH (RFC 4954), only over TLS unless the peer is loopback and the
//     caller opted in;
//  6. per message: MAIL FROM with SIZE (RFC 1870), BODY=8BITMIME
//     (RFC 6152), SMTPUTF8 (RFC 6531); RCPT TO per recipient; DATA,
//     pipelined when offered (RFC 2920); the dot-stuffed body; the final
//     reply. When the server offers CHUNKING (RFC 3030) and PIPELINING and
//     the body's size is known and at most 1 MiB, "BDAT <size> LAST" and
//     the body as is replace DATA, in the same write as MAIL and RCPT: one
//     round trip per message. Recipients refused with 452 go in a further
//     transaction on the same connection; LIMITS RCPTMAX (RFC 9422) is
//     honoured.
//  7. RSET, NOOP, QUIT for the pool.
//
// Every read and write has a deadline: the smaller of the stage timeout
// (RFC 5321 §4.5.3.2 defaults, see Timeouts) and the context's deadline, and
// cancelling the context aborts a blocked read or write. Replies are parsed
// with their enhanced status codes (RFC 3463, RFC 2034); a malformed reply
// makes the connection unusable. Every error is an *Error carrying the
// reply, the command, the host and whether it is permanent, with sentinels
// (ErrTLSFailed, ErrAuthFailed, ErrConnectionLost, ...) reachable with
// errors.Is.
//
// A Conn is used by one goroutine at a time.
package smtpclient
