// Package smtptest runs a recording SMTP server on loopback for tests.
//
// [Start] listens on 127.0.0.1 (or any address in [Options.Listen]) with
// github.com/emersion/go-smtp's server, records every message it accepts
// byte for byte, and stops when the test ends. Tests then assert exactly what
// arrived ([Server.Messages], [Server.WaitMessages]), how many connections
// were made ([Server.Connections]) and what crossed the wire in plaintext
// ([Server.Transcript]).
//
// [Options] turns the server into the peers a mail client meets in the wild:
//
//   - STARTTLS ([Options.TLS]) or TLS from the first byte
//     ([Options.ImplicitTLS]), with certificates from internal/testpki;
//   - a submission server requiring AUTH PLAIN or LOGIN ([Options.Auth]);
//   - recipient and size limits ([Options.MaxRecipients],
//     [Options.MaxMessageBytes]) and per-command policies
//     ([Options.MailPolicy], [Options.RcptPolicy], [Options.DataPolicy]);
//   - misbehaviour: a busy greeting ([Options.Greeting421]), a server that
//     stops reading in the middle of DATA ([Options.StallDuringData]), one
//     that hangs up instead of answering the final dot
//     ([Options.CloseAfterDot]) and one whose TLS handshake fails
//     ([Options.BrokenTLS]).
//
// The server speaks the protocol go-smtp implements: RFC 5321, with
// ESMTP extensions PIPELINING (RFC 2920), 8BITMIME (RFC 6152),
// ENHANCEDSTATUSCODES (RFC 2034, RFC 3463), CHUNKING (RFC 3030), SIZE
// (RFC 1870), STARTTLS (RFC 3207), AUTH (RFC 4954) and optionally SMTPUTF8
// (RFC 6531).
package smtptest
