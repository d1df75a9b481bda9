// Package mailroute sends each recipient of a message the way it is most
// likely to arrive: direct from your own server to the recipient's MX hosts
// for most of the world, and through an authenticated, reputable relay
// (Amazon SES, Postmark, Mailgun, your ISP's relay) for the big mailbox
// providers — Gmail, Outlook/Microsoft 365, Yahoo/AOL, iCloud — that drop or
// spam-folder mail from low-volume senders however well their DKIM, SPF and
// reverse DNS are set up.
//
// A [Mailer] is made once with [New] from a plain [Config] and shared. Its
// entry points are [Mailer.Send]; [Mailer.SendMail], with net/smtp's
// signature, and the package-level [SendMail] for a one-line migration;
// [Mailer.SendMsg] for github.com/wneessen/go-mail messages; and
// [Mailer.Route], a dry run of the routing.
//
// # The pipeline
//
// Mail flows through these steps, in this order:
//
//  1. Validate the envelope by the RFC 5321 grammar (a malformed address
//     fails the whole Send before any connection) and canonicalise the body
//     once: every line ends in CRLF, so that nothing inside the message can
//     end the DATA phase early (SMTP smuggling); large bodies spill to a
//     temporary file and every route reads the same bytes. Then, once, add a
//     missing Date and Message-ID and the DKIM signatures ([Config.DKIM]),
//     so that both paths carry the same signed message.
//  2. Group recipients by domain. Each domain is normalised once (lower
//     case, A-labels, no trailing dot) into a [Destination].
//  3. Route each destination: a [Router] returns a [Route] — [Direct] or
//     [Relayed] — with the evidence for it. [Rules] are an ordered list
//     (first match wins) matching domain patterns and [Provider]s, which
//     are recognised by their mailbox domains or by their MX hosts, so a
//     company on Google Workspace or Microsoft 365 counts as Google or
//     Microsoft. [DefaultRouter] sends [BigProviders] to the relay and
//     everything else direct.
//  4. Deliver, destinations concurrently ([Config.Concurrency]), never more
//     than [Config.MaxConnsPerHost] sessions to one server:
//     Direct resolves the MX hosts (the same cached answer routing used),
//     walks them in preference order and speaks SMTP on port 25 with
//     the TLS the destination asks for — DANE, when a validating resolver
//     is configured and the MX hosts publish signed TLSA records, else its
//     MTA-STS policy, else opportunistic STARTTLS ([DirectOptions],
//     [TLSProtection]); Relayed authenticates to the relay over verified
//     TLS only ([Relay]: a password, or OAuth 2.0 through
//     [Relay.TokenSource]). The relay is [Config.Relay] unless the
//     route names one of [Config.Relays] or the sender's domain picks one
//     ([Config.SenderRelays]); one that cannot be reached hands over to its
//     [Relay.Failover]. Sessions are pooled and transactions pipelined; at
//     most 100 recipients per transaction.
//  5. Report per recipient ([Result], [RecipientResult], [Error], and
//     [SendError] naming who got it and who did not); a
//     recipient whose direct delivery failed in a way the relay can fix —
//     no MX reachable, a reputation or policy refusal — is re-sent through
//     the relay ([FallbackPolicy], [Classify]).
//     Each failure explains itself ([Explain], [Verdict]) from the reply's
//     own words and codes, and a policy refusal teaches a route: mail to
//     the same MX site goes through the relay for a while ([Learning],
//     [Mailer.Lessons]); direct connections failing everywhere while the
//     relay works mean outbound port 25 is blocked ([BlockedPort25]).
//     Outcomes are counted per provider and path ([Mailer.Stats],
//     [Config.MeterProvider]).
//  6. Queue what is still deferred ([Config.Queue], a [QueueStore]): it
//     survives restarts and is retried on the [RetryPolicy] schedule,
//     through the relay after repeated direct deferrals, until
//     delivered or given up with an RFC 3464 notification ([Config.DSN],
//     [Config.OnEvent]).
//     Each message is attempted under one lease at a time, fenced by a
//     token and ended before the lease runs out ([QueueStore]), so
//     workers, Flush and instances sharing a store never send it at once;
//     state read back is checked like input and quarantined when wrong.
//
// The queue's stores are packages of their own, beside this one:
// [github.com/mailroute/go-mailroute/mailroute/spool] keeps it in a
// directory on the local disk, with nothing to install, and
// github.com/mailroute/go-mailroute/mailroute/riverqueue (a module of its
// own) in PostgreSQL, shared by several application instances.
//
// The package [github.com/mailroute/go-mailroute/mailroute/doctor] tells
// whether the sender's own setup — EHLO name and reverse DNS, SPF, DKIM
// records, DMARC alignment — is right for both paths.
//
// # MX resolution
//
// MX answers are cached per Mailer (5 minutes; temporary failures 30
// seconds) and concurrent lookups of one domain share a single query.
// Resolution follows RFC 5321 §5.1: hosts sorted by preference with equal
// preferences shuffled, the implicit MX when a domain has an address but no
// MX, [ErrNoSuchDomain] when it has neither, [ErrNullMX] for an RFC 7505
// null MX, and [ErrDNSTemporary] for SERVFAIL and timeouts.
//
// # Truthful outcomes and bounded work
//
// A recipient is Delivered only when the server accepted it in that
// transaction, Failed only when the server refused it (or the message can
// never be sent as is); anything uncertain is Deferred with an error that
// says why — a server whose replies fall out of step with the commands, a
// connection lost after the data went out. A pooled session the server
// closed while idle is found before use and the transaction redialled
// once, on both the DATA and the BDAT path; nothing that may have been
// accepted is ever sent again.
//
// Work per destination is bounded as in Postfix: per transaction, at most
// 10 MX host names looked up, 5 addresses tried (smtp_mx_address_limit)
// and 2 sessions that got past EHLO (smtp_mx_session_limit); once a
// context is done no lookup or connection starts. [Mailer.SendMail], which
// has no context, is bounded by [Config.SendMailTimeout]. [Mailer.Close]
// waits for the calls in flight and cancels them at its deadline, then
// closes every connection.
//
// # Authenticated TLS
//
// An enforced policy that no MX host meets defers the recipient
// ([ErrTLSPolicy]); it never falls back to plaintext, and reaches the
// relay only with [FallbackPolicy].OnTLSPolicy. DANE relies on the AD
// bit of a validating resolver the user runs ([DirectOptions].DANEResolver);
// MTA-STS policies are cached for their max_age in the queue when it is a
// [StateStore]. [WithREQUIRETLS] marks a message for RFC 8689: it goes
// only over authenticated TLS to a server offering REQUIRETLS, and its
// deferred recipients are queued with the mark ([QueuedMessage].RequireTLS),
// so every retry is held to the same rules until it is delivered or given
// up. The TLS outcome of every policy is counted for RFC 8460 reports
// ([Mailer.TLSReport]).
// Sends count in memory only; every minute and at Close the counts are
// saved in that StateStore, each instance under keys of its own, so a
// report adds up every Mailer sharing the store and the runs before a
// restart. A crash loses at most the last minute's counts.
//
// # Security
//
// Credentials are only ever sent over TLS verified against the relay's
// name, or to a loopback relay the user explicitly marked insecure.
// Addresses holding CR, LF, NUL, angle brackets or stray spaces never reach
// the wire, and neither does a bare CR or LF in a body.
//
// # Standards
//
//   - RFC 5321 (SMTP): §2.3.8 and §4.1.1.4 line endings and DATA, §4.1.2
//     address grammar, §4.1.3 address literals, §4.5.2 dot-stuffing,
//     §4.5.3.1 size limits (64-octet local part, 998-octet lines, 100
//     recipients), §4.5.3.2 timeouts, §5.1 MX resolution and ordering.
//   - RFC 7505: the null MX.
//   - RFC 1035 and RFC 1123: host name syntax and lengths.
//   - RFC 5890–5893 (IDNA2008) with UTS #46 mapping: Unicode domains become
//     A-labels. RFC 6531 (SMTPUTF8) for non-ASCII local parts.
//   - RFC 3207 (STARTTLS), RFC 8314 (implicit TLS, port 465), RFC 7435
//     (opportunistic security).
//   - RFC 8461 (MTA-STS), RFC 7672 with RFC 6698 and RFC 7671 (DANE for
//     SMTP), RFC 8460 (TLS reporting), RFC 8689 (REQUIRETLS and
//     TLS-Required: No).
//   - RFC 4954 (AUTH) with RFC 4616 (PLAIN), LOGIN, RFC 2195 (CRAM-MD5),
//     RFC 7628 (OAUTHBEARER) and XOAUTH2.
//   - RFC 2920 (PIPELINING), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 3463
//     and RFC 2034 (enhanced status codes).
//   - RFC 6376 and RFC 8463 (DKIM with RSA and Ed25519), RFC 8301 (key
//     sizes); RFC 7208 (SPF) and RFC 7489 (DMARC) in Check.
//   - RFC 3464 (delivery status notifications), RFC 3834
//     (Auto-Submitted); RFC 5321 §4.5.4.1 retry strategy.
package mailroute
