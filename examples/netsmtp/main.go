// Command netsmtp shows a net/smtp call site moved to mailroute. Before:
//
//	auth := smtp.PlainAuth("", "app", "secret", "localhost")
//	err := smtp.SendMail("localhost:587", auth, from, to, msg)
//
// After, the same arguments to a Mailer (or to the package-level
// mailroute.SendMail, which makes one with the defaults):
//
//	m, err := mailroute.New(mailroute.Config{Hostname: "mail.example.net"})
//	…
//	err = m.SendMail("localhost:587", auth, from, to, msg)
//
// The relay keeps Gmail and the other big providers; everyone else now gets
// mail direct from this host. The relay here is on loopback, so
// smtp.PlainAuth (which refuses to send a password in clear to anything
// but localhost) lets it authenticate without TLS; a remote relay must
// offer STARTTLS with a valid certificate.
//
// It runs anywhere with only Go: in this process, a DNS server answers for
// smallisp.example, one SMTP server stands for its MX host and another for
// the relay.
//
//	go run ./examples/netsmtp
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/smtp"
	"strconv"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

func main() {
	// The world: DNS for smallisp.example, its MX, and the relay.
	mx, err := mailtest.NewServer(mailtest.Options{Hostname: "mx.smallisp.example"})
	if err != nil {
		log.Fatal(err)
	}
	defer mx.Close()
	// The relay wants AUTH PLAIN, as a submission server does; on loopback
	// it offers it without TLS (see the package comment).
	relay, err := mailtest.NewServer(mailtest.Options{Hostname: "relay", Users: map[string]string{"app": "secret"}})
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close()
	dns := &mailtest.Resolver{
		MX:    map[string][]string{"smallisp.example": {"mx.smallisp.example"}},
		Hosts: map[string][]string{"mx.smallisp.example": {"127.0.0.1"}},
	}

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		// In a real program these two stay zero: the system resolver and
		// port 25. Here they point at the servers in this process.
		Resolver: dns,
		Direct:   mailroute.DirectOptions{Port: mx.Port()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	relayAddr := net.JoinHostPort("localhost", strconv.Itoa(relay.Port())) // "localhost:587" above
	auth := smtp.PlainAuth("", "app", "secret", "localhost")
	for _, rcpt := range []string{"friend@gmail.com", "pal@smallisp.example"} {
		msg := []byte("From: app@example.net\r\nTo: " + rcpt + "\r\nSubject: hello\r\n\r\nHi!\r\n")

		// The one changed line: smtp.SendMail(…) became m.SendMail(…).
		err := m.SendMail(relayAddr, auth, "app@example.net", []string{rcpt}, msg)
		if err != nil {
			log.Fatal(err)
		}

		r, err := m.Route(context.Background(), rcpt) // why it went where it did
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s → %v\n    why:  %s\n", rcpt, r.Via, r.Reason)
		for name, s := range map[string]*mailtest.Server{"relay": relay, "mx.smallisp.example": mx} {
			for _, msg := range s.Messages() {
				if msg.Rcpts[0] != rcpt {
					continue
				}
				fmt.Printf("    got:  %s (%s), from %s", name, s.Addr, msg.From)
				if msg.AuthUser != "" {
					fmt.Printf(", authenticated as %s", msg.AuthUser)
				}
				fmt.Println()
			}
		}
	}
}
