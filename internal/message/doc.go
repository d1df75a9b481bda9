// Package message checks what a caller hands to mailroute before any of it
// reaches the wire: the envelope addresses and the message bytes.
//
// Addresses are parsed by the RFC 5321 §4.1.2 grammar, extended by RFC 6531
// for UTF-8 local parts, rather than passed through as strings, because an
// SMTP client that writes "MAIL FROM:<" + from + ">" lets "a@b> SIZE=1" or
// "a@b\r\nRCPT TO:<c@d>" inject parameters and commands. ParseAddress and
// ParseReversePath return an Address whose String form is safe to put
// between angle brackets: no CR, LF, NUL or other control character, no '<'
// or '>', no space outside a quoted local part, the domain normalised to a
// lower-case A-label (package dnsname) or a canonical address literal
// (RFC 5321 §4.1.3), and the length limits of RFC 5321 §4.5.3.1 met.
//
// Message bytes are canonicalised once, in one streaming pass, by NewBody,
// because servers disagree about bare CR and bare LF and that disagreement is
// what SMTP smuggling exploits (CVE-2023-51764, CVE-2023-51765,
// CVE-2023-51766): a "\n.\n" that one server reads as the end of data and
// another as text lets a sender slip a second message past the first. The
// canonical form follows RFC 5321 §2.3.8: every line ends in CRLF (bare LF
// and bare CR each become CRLF), the message ends with CRLF, no line is
// longer than 998 octets (§4.5.3.1.6) and NUL is refused. Dot-stuffing
// (§4.5.2) is left to the SMTP engine: a Body holds the message as the
// recipient will see it, so one Body serves every route, every retry and a
// DKIM signer alike. Large messages spill to a temporary file instead of
// being held in memory.
package message
