package mailroute_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

// Send one message to a Gmail address and to a small provider: the first
// goes through the authenticated relay, the second direct to the
// provider's MX. (The relay, the MX and DNS run in-process on loopback here;
// a real program gives only Hostname and Smarthost.)
func ExampleMailer_Send() {
	ca, _ := mailtest.NewCA()
	relay, _ := mailtest.NewServer(mailtest.Options{TLS: ca.ServerConfig("127.0.0.1"), Users: map[string]string{"me@example.net": "secret"}})
	defer relay.Close()
	mx, _ := mailtest.NewServer(mailtest.Options{Hostname: "mx.smallisp.example"})
	defer mx.Close()
	dns := &mailtest.Resolver{
		MX:    map[string][]string{"smallisp.example": {"mx.smallisp.example"}},
		Hosts: map[string][]string{"mx.smallisp.example": {"127.0.0.1"}},
	}

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Relay: &mailroute.Relay{
			Addr:     relay.Addr,
			Username: "me@example.net", Password: "secret",
			TLSConfig: ca.ClientConfig(),
		},
		Resolver: dns,
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
		// A *mailroute.SendError: res still says who got it.
		log.Print(err)
	}
	for _, r := range res.Recipients {
		fmt.Println(r.Rcpt, r.Via, r.Status)
	}
	// Output:
	// friend@gmail.com relay delivered
	// pal@smallisp.example direct delivered
}
