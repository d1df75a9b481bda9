package mailroute_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"strings"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
	"github.com/mailroute/go-mailroute/mailroute"
)

// Send one message to a Gmail address and to a small provider: the first
// goes through the authenticated smarthost, the second direct to the
// provider's MX. (The relay, the MX and DNS run in-process on loopback here;
// a real program gives only Hostname and Smarthost.)
func ExampleMailer_Send() {
	ca, _ := testpki.NewCA()
	relay, _ := smtptest.Serve(smtptest.Options{TLS: ca.ServerConfig("127.0.0.1"), Auth: map[string]string{"me@example.net": "secret"}})
	defer relay.Close()
	mx, _ := smtptest.Serve(smtptest.Options{Domain: "mx.smallisp.example"})
	defer mx.Close()
	dns, _ := dnstest.Start()
	defer dns.Close()
	dns.MX("smallisp.example", "mx.smallisp.example").Host("mx.smallisp.example", "127.0.0.1")

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Smarthost: &mailroute.Relay{
			Addr:     relay.Addr,
			Username: "me@example.net", Password: "secret",
			TLSConfig: &tls.Config{RootCAs: ca.Pool()},
		},
		Resolver: mailroute.DNSServer(dns.Addr),
		Direct:   mailroute.DirectOptions{Port: mx.Port()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	msg := "From: me@example.net\r\nSubject: hello\r\n\r\nHi both.\r\n"
	res, err := m.Send(context.Background(), "me@example.net",
		[]string{"friend@gmail.com", "pal@smallisp.example"}, strings.NewReader(msg))
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range res.Recipients {
		fmt.Println(r.Rcpt, r.Via, r.Status)
	}
	// Output:
	// friend@gmail.com smarthost delivered
	// pal@smallisp.example direct delivered
}
