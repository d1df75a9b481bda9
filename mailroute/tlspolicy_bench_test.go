package mailroute

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

// BenchmarkTLSPolicy is the per-message cost of a destination's TLS policy
// once it is known: one message to one recipient at a time over a pooled
// STARTTLS session, with no policy (the baseline), a cached MTA-STS policy
// in enforce mode, and DANE (whose MX and TLSA answers come from the
// validating resolver, here a loopback DNS server, for every message).
func BenchmarkTLSPolicy(b *testing.B) {
	ca := testpki.New(b)
	conf := ca.ServerConfig("mx.dest.test")
	dns, err := dnstest.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer dns.Close()
	srv := smtptest.Start(b, smtptest.Options{TLS: conf, Domain: "mx.dest.test"})
	dns.Host("mx.dest.test", "127.0.0.1").Host("mta-sts.sts.test", "127.0.0.1")
	dns.MX("plain.test", "mx.dest.test").MX("sts.test", "mx.dest.test").MX("dane.test", "mx.dest.test")
	dns.Add(`_mta-sts.sts.test. TXT "v=STSv1; id=1;"`)
	dns.TLSA("mx.dest.test", srv.Port(), 3, conf.Certificates[0])
	dns.Secure("dane.test").Secure("mx.dest.test")
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("version: STSv1\nmode: enforce\nmx: mx.dest.test\nmax_age: 86400\n"))
	}))
	web.TLS = ca.ServerConfig("mta-sts.sts.test")
	web.StartTLS()
	defer web.Close()
	_, webPort, _ := net.SplitHostPort(web.Listener.Addr().String())

	msg := append([]byte("From: a@sender.test\r\nSubject: bench\r\n\r\n"), bytes.Repeat([]byte(strings.Repeat("x", 62)+"\r\n"), 32)...) // 2 KiB
	for _, tt := range []struct {
		name, domain string
		dane         bool
		want         TLSProtection
	}{
		{"none", "plain.test", false, TLSUnverified},
		{"mta-sts", "sts.test", false, TLSMTASTS},
		{"dane", "dane.test", true, TLSDANE},
	} {
		b.Run(tt.name, func(b *testing.B) {
			cfg := Config{
				Hostname: "mail.sender.test", Resolver: DNSServer(dns.Addr),
				Router: Rules{{Domains: []string{"*"}, Via: Direct}},
				Direct: DirectOptions{Port: srv.Port(), TLSConfig: &tls.Config{RootCAs: ca.Pool()}},
			}
			if tt.dane {
				cfg.Direct.DANEResolver = dns.Addr
			}
			m, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			m.testPolicyPort = webPort
			ctx := context.Background()
			rcpt := []string{"b@" + tt.domain}
			send := func() {
				res, err := m.Send(ctx, "a@sender.test", rcpt, bytes.NewReader(msg))
				if err != nil {
					b.Fatal(err)
				}
				if got := res.Recipients[0].TLS; got != tt.want {
					b.Fatalf("TLS %v, want %v", got, tt.want)
				}
			}
			send() // the policy fetched, the session pooled
			b.Run("send", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					send()
				}
			})
			// The decision alone: what a cached policy adds to a message
			// before any byte is sent.
			b.Run("decide", func(b *testing.B) {
				j := &job{dest: &Destination{Domain: tt.domain, cache: m.mx}, noTLSReq: 2}
				hosts := []*net.MX{{Host: "mx.dest.test", Pref: 10}}
				b.ReportAllocs()
				for b.Loop() {
					sec, hs, e := m.policyTLS(ctx, j, hosts)
					if e != nil {
						b.Fatal(e)
					}
					if h := sec.host(ctx, hs[0].Host); h.refuse != nil || h.level != tt.want {
						b.Fatalf("%+v", h)
					}
				}
			})
		})
	}
}
