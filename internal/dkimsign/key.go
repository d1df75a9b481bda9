package dkimsign

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"strings"

	"github.com/mailroute/go-mailroute/internal/dnsname"
)

// Key is one signature to add.
type Key struct {
	Domain   string        // d=: the signing domain
	Selector string        // s=: the key's name under Domain's _domainkey
	Signer   crypto.Signer // RSA ≥ 1024 bits or Ed25519
	Headers  []string      // the fields to sign; nil: DefaultHeaders
}

// DefaultHeaders are the header fields signed when Key.Headers is nil:
// those RFC 6376 §5.4.1 recommends that a mail program sets, the ones a
// reader sees, the ones that thread a conversation and the ones that say
// how to read the body (rspamd's over-signed list, without the List-* and
// Resent-* fields a mailing list adds). Each is over-signed.
var DefaultHeaders = []string{
	"From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
}

// MinRSABits is the smallest RSA key verifiers accept (RFC 8301 §3.2).
const MinRSABits = 1024

// Normalize checks k and returns it with its domain as a lower-case
// A-label. The errors say which part is wrong and how.
func Normalize(k Key) (Key, error) {
	d, err := dnsname.Normalize(k.Domain)
	if err != nil {
		return k, fmt.Errorf("domain %q: %w", k.Domain, err)
	}
	k.Domain = d
	if err := checkSelector(k.Selector); err != nil {
		return k, err
	}
	if len(k.Selector)+len("._domainkey.")+len(k.Domain) > 253 {
		return k, fmt.Errorf("selector %q: %s._domainkey.%s is longer than a DNS name may be", k.Selector, k.Selector, k.Domain)
	}
	if k.Signer == nil {
		return k, fmt.Errorf("selector %q: no Signer (the private key)", k.Selector)
	}
	if _, err := KeyType(k.Signer.Public()); err != nil {
		return k, err
	}
	if k.Headers != nil {
		from := false
		for _, h := range k.Headers {
			if !validFieldName(h) {
				return k, fmt.Errorf("header field name %q is not valid", h)
			}
			from = from || strings.EqualFold(h, "From")
		}
		if !from {
			return k, fmt.Errorf("Headers must include From (RFC 6376 §5.4)")
		}
	}
	return k, nil
}

// checkSelector accepts what RFC 6376 §3.1 allows: dot-separated labels
// of letters, digits and inner hyphens.
func checkSelector(s string) error {
	if s == "" {
		return fmt.Errorf("empty selector")
	}
	for _, label := range strings.Split(s, ".") {
		ok := label != "" && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for i := 0; ok && i < len(label); i++ {
			c := label[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
		}
		if !ok {
			return fmt.Errorf("selector %q: want labels of letters, digits and inner hyphens, separated by dots", s)
		}
	}
	return nil
}

// validFieldName reports whether s is a header field name (RFC 5322 §3.6.8:
// printable ASCII but the colon).
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 || s[i] == ':' {
			return false
		}
	}
	return true
}

// KeyType returns "rsa" or "ed25519" for a public key DKIM can use, and an
// error that says why for any other (RSA under MinRSABits included).
func KeyType(pub crypto.PublicKey) (string, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if bits := p.N.BitLen(); bits < MinRSABits {
			return "", fmt.Errorf("RSA key of %d bits: receivers refuse keys under %d bits (RFC 8301); use 2048", bits, MinRSABits)
		}
		return "rsa", nil
	case ed25519.PublicKey:
		return "ed25519", nil
	}
	return "", fmt.Errorf("a %T key cannot sign DKIM: use RSA (2048 bits) or Ed25519", pub)
}
