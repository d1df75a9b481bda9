// Package mailroute sends each recipient of a message the way it is most
// likely to arrive: direct from your own server to the recipient's MX hosts
// for most of the world, and through an authenticated, reputable smarthost
// (Amazon SES, Postmark, Mailgun, your ISP's relay) for the big mailbox
// providers — Gmail, Outlook/Microsoft 365, Yahoo/AOL, iCloud — that drop or
// spam-folder mail from low-volume senders however well their DKIM, SPF and
// reverse DNS are set up.
//
// # The pipeline
//
// Mail flows through these steps, in this order:
//
//  1. Validate the envelope and canonicalise the body once.
//  2. Group recipients by domain. Each domain is normalised once (lower
//     case, A-labels, no trailing dot) into a [Destination].
//  3. Route each destination: a [Router] returns a [Route] — [Direct] or
//     [Smarthost] — with the evidence for it. [Rules] are an ordered list
//     (first match wins) matching domain patterns and [Provider]s, which
//     are recognised by their mailbox domains or by their MX hosts, so a
//     company on Google Workspace or Microsoft 365 counts as Google or
//     Microsoft. [DefaultRouter] sends [BigProviders] to the smarthost and
//     everything else direct. [Mailer.Route] is a dry run of this step.
//  4. Deliver: direct delivery resolves MX hosts (the same cached answer
//     routing used) and speaks SMTP to them on port 25; smarthost delivery
//     authenticates to the relay over verified TLS.
//  5. Report per recipient, and fall back to the smarthost when direct
//     delivery fails in a way the relay can fix.
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
// # Standards
//
//   - RFC 5321 (SMTP): §4.1.3 address literals, §5.1 MX resolution and
//     ordering, the implicit MX.
//   - RFC 7505: the null MX.
//   - RFC 1035 and RFC 1123: host name syntax and lengths.
//   - RFC 5890–5893 (IDNA2008) with UTS #46 mapping: Unicode domains become
//     A-labels.
package mailroute
