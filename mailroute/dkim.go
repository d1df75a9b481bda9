package mailroute

import (
	"crypto"
	"fmt"
	"strconv"

	"github.com/mailroute/go-mailroute/internal/dkimsign"
	"github.com/mailroute/go-mailroute/internal/dnsname"
)

// DKIMSignature is one DKIM signature (RFC 6376) the Mailer adds to every
// message. Messages are signed with relaxed/relaxed canonicalisation and
// SHA-256, once, before routing, so direct and relay deliveries carry
// the same signature.
//
// Publish the public key first: Record gives the TXT record and RecordName
// its name, and Check says whether what DNS serves matches.
type DKIMSignature struct {
	// Domain is the signing domain (d=). For DMARC it must be the domain
	// of the From address, or (relaxed alignment, the default) a parent
	// of it.
	Domain string
	// Selector names the key (s=): its public key is published at
	// Selector._domainkey.Domain. Dated selectors ("2025a") let a new key
	// be published beside the old one before switching.
	Selector string
	// Signer is the private key: an *rsa.PrivateKey of at least 1024 bits
	// (2048 recommended; receivers refuse less than 1024, RFC 8301), an
	// ed25519.PrivateKey (RFC 8463; not all receivers verify it yet, so
	// pair it with an RSA signature), or any crypto.Signer holding such a
	// key, as a KMS or HSM client does.
	Signer crypto.Signer
	// Headers are the header fields signed, each once more than the
	// message has it, absent ones included (over-signing): a Subject,
	// Reply-To or Content-Type added later, even to a message that had
	// none, breaks the signature rather than changing what the reader
	// sees. nil: DefaultDKIMHeaders. It must include From.
	Headers []string
}

// DefaultDKIMHeaders returns the header fields signed when
// DKIMSignature.Headers is nil: From, Sender, Reply-To, To, Cc, Subject,
// Date, Message-ID, In-Reply-To, References, MIME-Version, Content-Type and
// Content-Transfer-Encoding, each over-signed. The
// slice is a copy, to edit into a set of one's own (a relay that rewrites
// Message-ID or Date needs them left out).
func DefaultDKIMHeaders() []string {
	return append([]string(nil), dkimsign.DefaultHeaders...)
}

// RecordName returns the DNS name the public key is published at,
// "selector._domainkey.domain".
func (s DKIMSignature) RecordName() string {
	d, err := dnsname.Normalize(s.Domain)
	if err != nil {
		d = s.Domain
	}
	return s.Selector + "._domainkey." + d
}

// Record returns the TXT record to publish at RecordName, e.g.
// "v=DKIM1; k=ed25519; p=…". A 2048-bit RSA record is longer than one TXT
// string may be (255 octets): DNS providers' forms split it on their own;
// in a zone file, write it as several quoted strings in one record.
func (s DKIMSignature) Record() (string, error) {
	if s.Signer == nil {
		return "", fmt.Errorf("mailroute: DKIMSignature %s has no Signer", s.RecordName())
	}
	r, err := dkimsign.Record(s.Signer.Public())
	if err != nil {
		return "", fmt.Errorf("mailroute: DKIMSignature %s: %w", s.RecordName(), err)
	}
	return r, nil
}

// AddMissing says when the Mailer adds a Date and a Message-ID to a message
// that lacks them.
type AddMissing uint8

const (
	// AddMissingWhenSigning adds them to messages it DKIM-signs, before
	// signing, so the signature covers them: a relay or server that added
	// one afterwards would break every signature naming it.
	AddMissingWhenSigning AddMissing = iota
	// AddMissingAlways adds them to every message, signed or not (Gmail
	// refuses messages without a Message-ID).
	AddMissingAlways
	// AddMissingNever sends messages as they are given.
	AddMissingNever
)

// String returns "when-signing", "always" or "never".
func (a AddMissing) String() string {
	switch a {
	case AddMissingWhenSigning:
		return "when-signing"
	case AddMissingAlways:
		return "always"
	case AddMissingNever:
		return "never"
	}
	return "AddMissing(" + strconv.Itoa(int(a)) + ")"
}

// HeaderOptions says which missing header fields the Mailer adds. The zero
// value adds a Date and a Message-ID to the messages it signs.
type HeaderOptions struct {
	// Add says when a missing Date or Message-ID is added. Only the header
	// section is looked at, and names match in any case. The zero value
	// is AddMissingWhenSigning.
	Add AddMissing
	// MessageIDDomain is the right-hand side of the Message-IDs the Mailer
	// makes ("<random@MessageIDDomain>"). "": the domain of the message's
	// From address, else the Mailer's host name.
	MessageIDDomain string
}

// checkDKIM checks Config.DKIM and Config.Headers; New calls it.
func (c *Config) checkDKIM() error {
	_, err := c.dkimKeys()
	if err != nil {
		return err
	}
	if c.Headers.Add > AddMissingNever {
		return fmt.Errorf("mailroute: Config.Headers.Add: unknown value %v", c.Headers.Add)
	}
	if c.Headers.MessageIDDomain != "" {
		if _, err := dnsname.Normalize(c.Headers.MessageIDDomain); err != nil {
			return fmt.Errorf("mailroute: Config.Headers.MessageIDDomain: %w", err)
		}
	}
	return nil
}

// dkimKeys returns Config.DKIM checked and normalised for signing.
func (c *Config) dkimKeys() ([]dkimsign.Key, error) {
	if len(c.DKIM) == 0 {
		return nil, nil
	}
	keys := make([]dkimsign.Key, len(c.DKIM))
	for i, s := range c.DKIM {
		k, err := dkimsign.Normalize(dkimsign.Key{Domain: s.Domain, Selector: s.Selector, Signer: s.Signer, Headers: s.Headers})
		if err != nil {
			return nil, fmt.Errorf("mailroute: Config.DKIM[%d]: %w", i, err)
		}
		keys[i] = k
	}
	return keys, nil
}

// addMissing reports whether Date and Message-ID are to be added to a
// message that is signed (or not).
func (o HeaderOptions) addMissing(signing bool) bool {
	switch o.Add {
	case AddMissingAlways:
		return true
	case AddMissingWhenSigning:
		return signing
	}
	return false
}
