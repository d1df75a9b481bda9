// Package dane authenticates SMTP servers by DNS-based Authentication of
// Named Entities (RFC 6698, RFC 7671), as RFC 7672 specifies for SMTP.
//
// Only the two usages RFC 7672 §3.1 allows for SMTP are usable: DANE-TA(2)
// and DANE-EE(3), with either selector (the whole certificate or its
// SubjectPublicKeyInfo) and any of the matching types Full(0), SHA2-256(1)
// and SHA2-512(2). PKIX-TA(0), PKIX-EE(1) and unknown values are
// unusable. A server whose TLSA records are all unusable still gets
// mandatory, unauthenticated TLS (RFC 7672 §2.2).
//
// DANE-EE matches the server's own certificate and checks neither names
// nor dates (RFC 7672 §3.1.1); DANE-TA matches a certificate the server
// sends in its chain, which then anchors an ordinary chain check for one
// of the reference names (RFC 7672 §3.2.2), dates included.
package dane

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Usages, selectors and matching types (RFC 6698 §2.1, RFC 7218 names).
const (
	UsageDANETA   = 2
	UsageDANEEE   = 3
	SelectorCert  = 0
	SelectorSPKI  = 1
	MatchFull     = 0
	MatchSHA256   = 1
	MatchSHA512   = 2
	maxHexDataLen = 8192 // a full certificate in hex; more is not a record we use
)

// Usable reports whether r can authenticate an SMTP server.
func Usable(r *dns.TLSA) bool {
	if r.Usage != UsageDANETA && r.Usage != UsageDANEEE {
		return false
	}
	if r.Selector != SelectorCert && r.Selector != SelectorSPKI {
		return false
	}
	data, err := hex.DecodeString(r.Certificate)
	if err != nil || len(r.Certificate) > maxHexDataLen {
		return false
	}
	switch r.MatchingType {
	case MatchFull:
		return len(data) > 0
	case MatchSHA256:
		return len(data) == sha256.Size
	case MatchSHA512:
		return len(data) == sha512.Size
	}
	return false
}

// FilterUsable returns the usable records of rs.
func FilterUsable(rs []*dns.TLSA) []*dns.TLSA {
	var out []*dns.TLSA
	for _, r := range rs {
		if Usable(r) {
			out = append(out, r)
		}
	}
	return out
}

// ErrNoMatch means no usable TLSA record matched the server's chain:
// the TLS-RPT result type is "validation-failure".
var ErrNoMatch = errors.New("no TLSA record matches the server's certificate")

// Matches reports whether the certificate matches the record's selector
// and matching type. The record must be usable.
func Matches(r *dns.TLSA, cert *x509.Certificate) bool {
	var data []byte
	switch r.Selector {
	case SelectorCert:
		data = cert.Raw
	case SelectorSPKI:
		data = cert.RawSubjectPublicKeyInfo
	default:
		return false
	}
	switch r.MatchingType {
	case MatchSHA256:
		h := sha256.Sum256(data)
		data = h[:]
	case MatchSHA512:
		h := sha512.Sum512(data)
		data = h[:]
	case MatchFull:
	default:
		return false
	}
	want, err := hex.DecodeString(r.Certificate)
	return err == nil && bytes.Equal(data, want)
}

// Verify authenticates a server's TLS connection against its usable TLSA
// records. names are the reference identifiers a DANE-TA chain must be
// valid for: the TLSA base domain (the MX host name) first, and the
// next-hop domain, as RFC 7672 §3.2.2 allows. now is the time DANE-TA
// chains are checked at.
func Verify(records []*dns.TLSA, names []string, cs tls.ConnectionState, now time.Time) error {
	chain := cs.PeerCertificates
	if len(chain) == 0 {
		return errors.New("DANE: the server sent no certificate")
	}
	leaf := chain[0]
	var taErr error
	for _, r := range records {
		if !Usable(r) {
			continue
		}
		switch r.Usage {
		case UsageDANEEE:
			if Matches(r, leaf) {
				return nil
			}
		case UsageDANETA:
			err := verifyTA(r, chain, names, now)
			if err == nil {
				return nil
			}
			if taErr == nil && !errors.Is(err, ErrNoMatch) {
				taErr = err
			}
		}
	}
	if taErr != nil {
		return taErr
	}
	return ErrNoMatch
}

// verifyTA looks for the trust anchor among the certificates the server
// sent (RFC 7672 §3.1.2 obliges servers to send it, unless only its key is
// published, which this does not support) and checks the chain from the
// leaf to it for one of names.
func verifyTA(r *dns.TLSA, chain []*x509.Certificate, names []string, now time.Time) error {
	for i, ta := range chain {
		if !Matches(r, ta) {
			continue
		}
		if i == 0 {
			// The leaf is its own anchor: check names and dates only.
			return checkLeaf(ta, names, now)
		}
		roots := x509.NewCertPool()
		roots.AddCert(ta)
		inter := x509.NewCertPool()
		for _, c := range chain[1:i] {
			inter.AddCert(c)
		}
		var lastErr error
		for _, name := range names {
			_, err := chain[0].Verify(x509.VerifyOptions{
				DNSName: strings.TrimSuffix(name, "."), Roots: roots, Intermediates: inter,
				CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			})
			if err == nil {
				return nil
			}
			lastErr = err
		}
		return fmt.Errorf("DANE-TA: the chain to the matching anchor does not verify: %w", lastErr)
	}
	return ErrNoMatch
}

func checkLeaf(c *x509.Certificate, names []string, now time.Time) error {
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return fmt.Errorf("DANE-TA: the certificate is not valid at %s", now.UTC().Format(time.RFC3339))
	}
	for _, n := range names {
		if c.VerifyHostname(strings.TrimSuffix(n, ".")) == nil {
			return nil
		}
	}
	return fmt.Errorf("DANE-TA: the certificate is valid for none of %v", names)
}

// Config returns the TLS client configuration that authenticates a server
// by its TLSA records: SNI is the TLSA base domain (RFC 7672 §8.1), the
// system's verification is replaced by Verify, and TLS 1.2 is the least
// accepted. base may carry settings of the caller's (a client
// certificate); its roots are not used.
func Config(base *tls.Config, records []*dns.TLSA, names []string, now func() time.Time) *tls.Config {
	var c *tls.Config
	if base != nil {
		c = base.Clone()
	} else {
		c = &tls.Config{}
	}
	c.ServerName = strings.TrimSuffix(names[0], ".")
	c.InsecureSkipVerify = true // Verify below takes its place
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		return Verify(records, names, cs, now())
	}
	return c
}
