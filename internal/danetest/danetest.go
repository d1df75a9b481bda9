// Package danetest starts, for tests, two DANE domains on loopback: one
// whose TLSA record matches its MX's key and one whose record does not,
// so that a Mailer's TLS-RPT counts and DANE verdicts can be checked
// against real TLS servers and a real DNS server.
package danetest

import (
	"strconv"
	"testing"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

// Pair starts the two domains: good.test, whose MX (mx.good.test on
// 127.0.0.1) has a DNSSEC-secure TLSA record matching its key, and
// bad.test, whose MX (mx.bad.test on 127.0.0.2, the same port) has a
// secure TLSA record naming another key. It returns the DNS server and
// the MX servers' port; both stop when t ends.
func Pair(t testing.TB) (*dnstest.Server, int) {
	t.Helper()
	ca := testpki.New(t)
	goodConf := ca.ServerConfig("mx.good.test")
	good := smtptest.Start(t, smtptest.Options{Listen: "127.0.0.1:0", Domain: "mx.good.test", TLS: goodConf})
	port := good.Port()
	smtptest.Start(t, smtptest.Options{Listen: "127.0.0.2:" + strconv.Itoa(port), Domain: "mx.bad.test", TLS: ca.ServerConfig("mx.bad.test")})
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	dns.Host("mx.good.test", "127.0.0.1").MX("good.test", "mx.good.test").Secure("good.test")
	dns.Host("mx.bad.test", "127.0.0.2").MX("bad.test", "mx.bad.test").Secure("bad.test")
	dns.TLSA("mx.good.test", port, 3, goodConf.Certificates[0])
	// A key of the right name from the same CA, but not the server's.
	dns.TLSA("mx.bad.test", port, 3, ca.ServerConfig("mx.bad.test").Certificates[0])
	return dns, port
}
