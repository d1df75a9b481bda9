package mailtest_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

// A Mailer resolving through the DNS server sends real queries to it, and
// DANE applies only to a zone marked Secure whose TLSA record matches.
func TestDNSServesMXAndDANE(t *testing.T) {
	ca, err := mailtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dns, err := mailtest.StartDNS()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	conf := ca.ServerConfig("mx.signed.test", "mx.wrong.test")
	mx, err := mailtest.NewServer(mailtest.Options{TLS: conf})
	if err != nil {
		t.Fatal(err)
	}
	defer mx.Close()
	leaf, err := x509.ParseCertificate(conf.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	port := strconv.Itoa(mx.Port())
	for _, d := range []string{"signed.test", "wrong.test", "plain.test"} {
		dns.MX(d, "mx."+d).Host("mx."+d, "127.0.0.1")
	}
	dns.Secure("signed.test").Secure("wrong.test")
	dns.Add("_"+port+"._tcp.mx.signed.test. TLSA 3 1 1 "+hex.EncodeToString(spki[:]),
		"_"+port+"._tcp.mx.wrong.test. TLSA 3 1 1 "+strings.Repeat("00", 32))

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Resolver: mailroute.DNSServer(dns.Addr()),
		Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}},
		Direct:   mailroute.DirectOptions{Port: mx.Port(), DANEResolver: dns.Addr()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, _ := m.Send(context.Background(), "a@example.net",
		[]string{"x@signed.test", "y@wrong.test", "z@plain.test"}, strings.NewReader(body))
	want := map[string]struct {
		status mailroute.Status
		tls    mailroute.TLSProtection
	}{
		"x@signed.test": {mailroute.Delivered, mailroute.TLSDANE},
		"y@wrong.test":  {mailroute.Deferred, mailroute.TLSNone},
		"z@plain.test":  {mailroute.Delivered, mailroute.TLSUnverified},
	}
	for _, r := range res.Recipients {
		w := want[r.Rcpt]
		if r.Status != w.status || r.TLS != w.tls {
			t.Errorf("%s: %v over %v (%v), want %v over %v", r.Rcpt, r.Status, r.TLS, r.Err, w.status, w.tls)
		}
	}
	// One MX query from Config.Resolver (routing and delivery share it),
	// and one through the DANE resolver, whose AD bit says whether the MX
	// answer itself is authenticated.
	if n := dns.Queries("signed.test", "MX"); n != 2 {
		t.Errorf("MX queries for signed.test: %d, want 2", n)
	}
	if got := len(mx.Messages()); got != 2 {
		t.Errorf("the MX recorded %d messages, want 2", got)
	}
}
