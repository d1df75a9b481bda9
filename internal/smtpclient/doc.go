// Package smtpclient is the SMTP client engine of mailroute: one session
// (RFC 5321) that serves both transports, direct delivery to an MX host on
// port 25 and submission through an authenticated relay.
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
// # Reply accounting
//
// The engine knows exactly which replies it awaits, on every path (DATA
// or BDAT, pipelined or lock-step, fresh or reused session): one per
// command written. Bytes that come when no reply is due — an unsolicited
// or extra line, a reply after the final one, anything waiting on the
// session between transactions — mean the server is out of step: which
// reply answers which command is no longer known, so the whole transaction
// is reported with ErrOutOfStep (temporary: Deferred), never Delivered or
// Failed on a reply that may belong to another command, and the session
// is closed, never pooled. So does a reply of a class no command in its
// place can get (3xx to MAIL or RCPT, 2xx to DATA, a positive BDAT reply
// when every RCPT was refused). The checks cost no round trip: the read
// buffer must be empty whenever no reply is due, and after the final
// reply and before each Send the socket is looked at without blocking
// (recv with MSG_PEEK|MSG_DONTWAIT), which also sees a server that closed
// an idle session. After the final reply on a plaintext TCP session the
// read that brought it stands for that look when it came back short (the
// kernel then had nothing more queued), so a message costs one look, not
// two. A stream in which the server wrote a line too many and
// then hung up before its last reply cannot be told from an honest one by
// any client; FuzzServer exempts exactly that case.
//
// # Dead sessions and the one ambiguity
//
// A pooled session the server closed while it sat idle (silently, or
// with "421 idle timeout") is found before anything is written, and the
// Send fails with ErrUnusable: Retryable, so the caller redials and sends
// on a new session with certainty that nothing was accepted. On the DATA
// path a session that dies later is still certain: the body goes only
// after 354.
//
// BDAT LAST is different: MAIL, RCPT, BDAT and the chunk go in one write,
// so a server can take the whole message and die before flushing a single
// reply; a connection lost before any reply is then "may have been
// accepted" (ErrConnectionLost), and is never retried on another session,
// since sending twice what may have been accepted is the worse error. The
// same silence is what a session closed by its server just as the write
// went out looks like. Such a close happens when the session has been
// idle long enough for the server's idle timer to run out, so a session
// idle for Config.SplitAfterIdle (1 s) or more sends MAIL and RCPT first
// and waits for their replies before the chunk: one more round trip, only
// after an idle period that dwarfs it. A server that dies there has
// certainly accepted nothing (Retryable). A session in use back to back
// keeps one write, hence one round trip, per message; a server that
// crashes within that second after taking a message is reported as
// uncertain, which is the truth.
//
// A Conn is used by one goroutine at a time.
package smtpclient
