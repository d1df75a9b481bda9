package dane

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailroute/go-mailroute/internal/testpki"
)

// FuzzVerify: a record built from anything but the server's own keys never
// authenticates it. The invariant: when Verify accepts, some usable record
// is a DANE-EE digest of the leaf or a DANE-TA digest of a certificate the
// server sent.
func FuzzVerify(f *testing.F) {
	ca, err := testpki.NewCA()
	if err != nil {
		f.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(ca.Issue("mx.dest.test").Certificate[0])
	if err != nil {
		f.Fatal(err)
	}
	chain := []*x509.Certificate{leaf, ca.Cert}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	f.Add(uint8(3), uint8(1), uint8(1), hex.EncodeToString(spki[:]))
	f.Add(uint8(2), uint8(0), uint8(1), "00")
	f.Add(uint8(3), uint8(0), uint8(0), hex.EncodeToString(leaf.Raw[:40]))
	f.Fuzz(func(t *testing.T, usage, selector, matching uint8, data string) {
		r := &dns.TLSA{Usage: usage, Selector: selector, MatchingType: matching, Certificate: data}
		err := Verify([]*dns.TLSA{r}, []string{"mx.dest.test"}, tls.ConnectionState{PeerCertificates: chain}, time.Now())
		if err != nil {
			return
		}
		if !Usable(r) {
			t.Fatalf("an unusable record %v authenticated the server", r)
		}
		var candidates []*x509.Certificate
		switch usage {
		case UsageDANEEE:
			candidates = chain[:1]
		case UsageDANETA:
			candidates = chain
		}
		for _, c := range candidates {
			if digestOf(c, selector, matching) == hexLower(data) {
				return
			}
		}
		t.Fatalf("%v authenticated a chain it does not describe", r)
	})
}

// digestOf is the record data for c, computed independently of Matches.
func digestOf(c *x509.Certificate, selector, matching uint8) string {
	data := c.Raw
	if selector == 1 {
		data = c.RawSubjectPublicKeyInfo
	}
	switch matching {
	case 1:
		s := sha256.Sum256(data)
		return hex.EncodeToString(s[:])
	case 2:
		s := sha512.Sum512(data)
		return hex.EncodeToString(s[:])
	}
	return hex.EncodeToString(data)
}

func hexLower(s string) string {
	b, err := hex.DecodeString(s)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(b)
}
