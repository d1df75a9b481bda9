package mailroute_test

import (
	"context"
	"fmt"
	"log"
	"net/smtp"
	"os"

	"github.com/wneessen/go-mail"

	"github.com/mailroute/go-mailroute/mailroute"
)

// These examples need a relay and the Internet, so they are compiled but
// not run; examples/netsmtp and examples/gomail run the same code against
// servers in their own process.

// An existing net/smtp call site keeps its relay and its Auth: only the
// receiver changes. Gmail and the other big providers still go through
// smtp.relay.example; everyone else gets the mail direct.
func ExampleMailer_SendMail() {
	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net", // with a matching PTR record
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	auth := smtp.PlainAuth("", "app@example.net", os.Getenv("RELAY_PASSWORD"), "smtp.relay.example")
	msg := []byte("From: app@example.net\r\nTo: friend@gmail.com, pal@smallisp.example\r\nSubject: hello\r\n\r\nHi!\r\n")

	// Before: err = smtp.SendMail("smtp.relay.example:587", auth, …)
	err = m.SendMail("smtp.relay.example:587", auth, "app@example.net",
		[]string{"friend@gmail.com", "pal@smallisp.example"}, msg)
	if err != nil {
		log.Print(err) // nil only when every recipient was delivered
	}
}

// The smallest migration is a change of import: net/smtp's SendMail and
// mailroute's take the same arguments.
func ExampleSendMail() {
	auth := smtp.PlainAuth("", "app@example.net", os.Getenv("RELAY_PASSWORD"), "smtp.relay.example")
	msg := []byte("Subject: hello\r\n\r\nHi!\r\n")
	if err := mailroute.SendMail("smtp.relay.example:587", auth, "app@example.net", []string{"friend@gmail.com"}, msg); err != nil {
		log.Print(err)
	}
}

// A go-mail message goes out with its own envelope: To, Cc and Bcc each by
// its route, and no Bcc header for anyone to see.
func ExampleMailer_SendMsg() {
	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Relay: &mailroute.Relay{
			Addr:     "smtp.relay.example:587",
			Username: "app@example.net",
			Password: os.Getenv("RELAY_PASSWORD"),
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	msg := mail.NewMsg()
	if err := msg.From("App <app@example.net>"); err != nil {
		log.Fatal(err)
	}
	if err := msg.To("friend@gmail.com"); err != nil {
		log.Fatal(err)
	}
	if err := msg.Cc("pal@smallisp.example"); err != nil {
		log.Fatal(err)
	}
	if err := msg.Bcc("archive@example.net"); err != nil {
		log.Fatal(err)
	}
	msg.Subject("hello")
	msg.SetBodyString(mail.TypeTextPlain, "Hi!\n")

	res, err := m.SendMsg(context.Background(), msg)
	for _, r := range res.Recipients {
		fmt.Printf("%s: %v via %v (%s)\n", r.Rcpt, r.Status, r.Via, r.Host)
	}
	if err != nil {
		log.Print(err)
	}
}
