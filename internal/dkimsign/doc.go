// Package dkimsign adds DKIM signatures (RFC 6376) to a canonical message,
// with github.com/emersion/go-msgauth/dkim doing the cryptography, and
// completes the header fields a signature should cover first.
//
// The steps, once per message:
//
//  1. Scan the header section (and only it) for Date, Message-ID and the
//     fields to be signed ([ScanHeader]).
//  2. Make a Date (RFC 5322 §3.6.1) and a Message-ID (§3.6.4) when they are
//     missing and the caller asks for them. They must exist before signing:
//     a relay that adds a Message-ID to a signed message breaks every
//     signature whose h= names it.
//  3. Stream the added fields and the message through one go-msgauth
//     Signer per key, with relaxed/relaxed canonicalisation (RFC 6376
//     §3.4.2, §3.4.4), which survives the header refolding and trailing
//     white space changes relays make. The signed header list names each
//     wanted field as often as the message has it, plus From once more
//     (over-signing, §5.4.2), so that nobody can add a second From without
//     breaking the signature, while fields the message lacks are left
//     unsigned so that a relay adding one (MIME-Version, say) does not.
//  4. Return the text to put before the message: the DKIM-Signature fields
//     and the added fields ([Prefix]). The message itself is not copied.
//
// Keys are RSA of at least 1024 bits (RFC 8301 §3.2; 2048 recommended) or
// Ed25519 (RFC 8463). [Record] makes the TXT record that publishes a key,
// and [ParseRecord] reads one back, for the doctor.
package dkimsign
