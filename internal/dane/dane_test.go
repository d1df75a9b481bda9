package dane

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

// Record builds a TLSA record for cert.
func record(usage, selector, matching uint8, cert *x509.Certificate) *dns.TLSA {
	data := cert.Raw
	if selector == SelectorSPKI {
		data = cert.RawSubjectPublicKeyInfo
	}
	switch matching {
	case MatchSHA256:
		h := sha256.Sum256(data)
		data = h[:]
	case MatchSHA512:
		h := sha512.Sum512(data)
		data = h[:]
	}
	return &dns.TLSA{Usage: usage, Selector: selector, MatchingType: matching, Certificate: hex.EncodeToString(data)}
}

func leafOf(t *testing.T, c tls.Certificate) *x509.Certificate {
	t.Helper()
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestVerify(t *testing.T) {
	ca := testpki.New(t)
	other := testpki.New(t)
	leaf := leafOf(t, ca.Issue("mx.dest.test"))
	expired := leafOf(t, ca.IssueExpired("mx.dest.test"))
	wrongName := leafOf(t, ca.Issue("mx.other.test"))
	stranger := leafOf(t, other.Issue("mx.dest.test"))
	now := time.Now()
	names := []string{"mx.dest.test.", "dest.test"}
	for _, tt := range []struct {
		name    string
		records []*dns.TLSA
		chain   []*x509.Certificate
		ok      bool
	}{
		{"EE cert sha256", []*dns.TLSA{record(3, 0, 1, leaf)}, []*x509.Certificate{leaf}, true},
		{"EE spki sha256", []*dns.TLSA{record(3, 1, 1, leaf)}, []*x509.Certificate{leaf}, true},
		{"EE spki sha512", []*dns.TLSA{record(3, 1, 2, leaf)}, []*x509.Certificate{leaf}, true},
		{"EE cert full", []*dns.TLSA{record(3, 0, 0, leaf)}, []*x509.Certificate{leaf}, true},
		{"EE ignores dates and names", []*dns.TLSA{record(3, 1, 1, expired), record(3, 1, 1, wrongName)}, []*x509.Certificate{wrongName}, true},
		{"EE mismatch", []*dns.TLSA{record(3, 1, 1, stranger)}, []*x509.Certificate{leaf}, false},
		{"one of several matches", []*dns.TLSA{record(3, 1, 1, stranger), record(3, 0, 2, leaf)}, []*x509.Certificate{leaf}, true},
		{"TA cert sha256", []*dns.TLSA{record(2, 0, 1, ca.Cert)}, []*x509.Certificate{leaf, ca.Cert}, true},
		{"TA spki sha512", []*dns.TLSA{record(2, 1, 2, ca.Cert)}, []*x509.Certificate{leaf, ca.Cert}, true},
		{"TA not sent by the server", []*dns.TLSA{record(2, 0, 1, ca.Cert)}, []*x509.Certificate{leaf}, false},
		{"TA wrong name", []*dns.TLSA{record(2, 0, 1, ca.Cert)}, []*x509.Certificate{wrongName, ca.Cert}, false},
		{"TA expired leaf", []*dns.TLSA{record(2, 0, 1, ca.Cert)}, []*x509.Certificate{expired, ca.Cert}, false},
		{"TA of another CA", []*dns.TLSA{record(2, 0, 1, ca.Cert)}, []*x509.Certificate{stranger, other.Cert}, false},
		{"TA matching the leaf, name checked", []*dns.TLSA{record(2, 1, 1, leaf)}, []*x509.Certificate{leaf}, true},
		{"PKIX-EE is unusable", []*dns.TLSA{record(1, 1, 1, leaf)}, []*x509.Certificate{leaf}, false},
		{"PKIX-TA is unusable", []*dns.TLSA{record(0, 0, 1, ca.Cert)}, []*x509.Certificate{leaf, ca.Cert}, false},
		{"unknown matching type", []*dns.TLSA{{Usage: 3, Selector: 1, MatchingType: 9, Certificate: "00"}}, []*x509.Certificate{leaf}, false},
		{"sha256 of the wrong length", []*dns.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Certificate: "00ff"}}, []*x509.Certificate{leaf}, false},
		{"no certificate", []*dns.TLSA{record(3, 1, 1, leaf)}, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.records, names, tls.ConnectionState{PeerCertificates: tt.chain}, now)
			if (err == nil) != tt.ok {
				t.Fatalf("Verify: %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if n := len(FilterUsable([]*dns.TLSA{record(1, 1, 1, leaf), record(3, 1, 1, leaf), {Usage: 3, Selector: 2, MatchingType: 1}})); n != 1 {
		t.Errorf("%d usable records, want 1", n)
	}
}

// A real handshake: the Config that Verify drives accepts the server whose
// key is published and refuses another, before anything is sent.
func TestConfigHandshake(t *testing.T) {
	ca := testpki.New(t)
	good := ca.Issue("mx.dest.test")
	bad := testpki.SelfSigned("mx.dest.test")
	recs := []*dns.TLSA{record(3, 1, 1, leafOf(t, good))}
	for _, tt := range []struct {
		cert tls.Certificate
		ok   bool
	}{{good, true}, {bad, false}} {
		cconn, sconn := pipe(t)
		srv := tls.Server(sconn, &tls.Config{Certificates: []tls.Certificate{tt.cert}})
		go srv.Handshake()
		c := tls.Client(cconn, Config(nil, recs, []string{"mx.dest.test."}, time.Now))
		err := c.Handshake()
		if (err == nil) != tt.ok {
			t.Errorf("handshake: %v, want ok=%v", err, tt.ok)
		}
		if err == nil && c.ConnectionState().ServerName != "mx.dest.test" {
			t.Errorf("SNI %q", c.ConnectionState().ServerName)
		}
		c.Close()
		srv.Close()
	}
}

func TestLookup(t *testing.T) {
	s, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.MX("signed.test", "mx.signed.test").Secure("signed.test")
	s.Add("_25._tcp.mx.signed.test. TLSA 3 1 1 " + hex.EncodeToString(make([]byte, 32)))
	s.MX("plain.test", "mx.plain.test")
	s.Add("_25._tcp.mx.plain.test. TLSA 3 1 1 " + hex.EncodeToString(make([]byte, 32)))
	s.ServFail("bogus.test")
	r := &Resolver{Addr: s.Addr}
	ctx := context.Background()

	mxs, secure, err := r.LookupMX(ctx, "signed.test")
	if err != nil || !secure || len(mxs) != 1 || mxs[0].Host != "mx.signed.test." {
		t.Errorf("signed MX: %v %v %v", mxs, secure, err)
	}
	if _, secure, err := r.LookupMX(ctx, "plain.test"); err != nil || secure {
		t.Errorf("unsigned MX: secure=%v %v", secure, err)
	}
	ta, err := r.LookupTLSA(ctx, "mx.signed.test.", 25)
	if err != nil || !ta.Secure || len(ta.Records) != 1 {
		t.Errorf("signed TLSA: %+v %v", ta, err)
	}
	// Kept for its TTL: a second lookup asks nothing.
	if _, err := r.LookupTLSA(ctx, "mx.signed.test", 25); err != nil || s.Queries("_25._tcp.mx.signed.test", "TLSA") != 1 {
		t.Errorf("a second lookup: %v, %d queries, want 1", err, s.Queries("_25._tcp.mx.signed.test", "TLSA"))
	}
	ta, err = r.LookupTLSA(ctx, "mx.plain.test", 25)
	if err != nil || ta.Secure || len(ta.Records) != 1 {
		t.Errorf("unsigned TLSA: %+v %v", ta, err)
	}
	ta, err = r.LookupTLSA(ctx, "nothere.signed.test", 25)
	if err != nil || !ta.Secure || len(ta.Records) != 0 {
		t.Errorf("authenticated denial: %+v %v", ta, err)
	}
	if _, err := r.LookupTLSA(ctx, "mx.bogus.test", 25); err == nil {
		t.Error("SERVFAIL (bogus) gave no error")
	}
	var ne interface{ Temporary() bool }
	if _, _, err := r.LookupMX(ctx, "bogus.test"); !errors.As(err, &ne) || !ne.Temporary() {
		t.Errorf("SERVFAIL: %v, want a temporary error", err)
	}
}
