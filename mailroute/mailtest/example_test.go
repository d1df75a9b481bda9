package mailtest_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

// Test a program's handling of a greylisting receiver: the first attempt
// is deferred, the second delivered, and the server recorded what
// arrived.
func Example() {
	mx, err := mailtest.NewServer(mailtest.Options{Hostname: "mx.example.org", Greylist: true})
	if err != nil {
		log.Fatal(err)
	}
	defer mx.Close()
	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Resolver: &mailtest.Resolver{
			MX:    map[string][]string{"example.org": {"mx.example.org"}},
			Hosts: map[string][]string{"mx.example.org": {"127.0.0.1"}},
		},
		Direct: mailroute.DirectOptions{Port: mx.Port()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	for range 2 {
		res, _ := m.Send(context.Background(), "me@example.net", []string{"you@example.org"},
			strings.NewReader("Subject: hi\r\n\r\nHello.\r\n"))
		r := res.Recipients[0]
		fmt.Println(r.Status, r.Err)
	}
	for _, msg := range mx.Messages() {
		fmt.Printf("%s got %q from %s\n", msg.Rcpts[0], msg.Data, msg.Helo)
	}
	// Output:
	// deferred mx.example.org: RCPT: 450 4.2.0 Greylisted, please try again later
	// delivered <nil>
	// you@example.org got "Subject: hi\r\n\r\nHello.\r\n" from mail.example.net
}

// A relay as Relay meets one: STARTTLS with a certificate from a
// throwaway CA, and AUTH.
func ExampleNewCA() {
	ca, err := mailtest.NewCA()
	if err != nil {
		log.Fatal(err)
	}
	relay, err := mailtest.NewServer(mailtest.Options{
		TLS:   ca.ServerConfig("127.0.0.1"),
		Users: map[string]string{"app": "secret"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close()
	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Relayed}},
		Relay:    &mailroute.Relay{Addr: relay.Addr, Username: "app", Password: "secret", TLSConfig: ca.ClientConfig()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Send(context.Background(), "me@example.net", []string{"you@example.org"},
		strings.NewReader("Subject: hi\r\n\r\nHello.\r\n")); err != nil {
		log.Fatal(err)
	}
	msg := relay.Messages()[0]
	fmt.Println("TLS:", msg.TLS, "user:", msg.AuthUser)
	// Output:
	// TLS: true user: app
}
