// Command gomail sends a message built with github.com/wneessen/go-mail
// through a Mailer: To, Cc and Bcc each go the way the router decides
// (Gmail through the relay, a small provider direct to its MX host), and
// the Bcc recipient gets the message without a Bcc header anyone could see.
//
// It runs anywhere with only Go: in this process, a DNS server answers for
// smallisp.example, one SMTP server stands for its MX host and another for
// the relay.
//
//	go run ./examples/gomail
package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/wneessen/go-mail"

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
		Relay: &mailroute.Relay{
			Addr:     relay.Addr,
			Username: "app",
			Password: "secret",
			// Only because this relay is on loopback without TLS; a real
			// relay is reached over verified TLS.
			InsecurePlaintextLoopback: true,
		},
		// In a real program these two stay zero: the system resolver and
		// port 25. Here they point at the servers in this process.
		Resolver: dns,
		Direct:   mailroute.DirectOptions{Port: mx.Port()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	msg := mail.NewMsg()
	check(msg.From("App <app@example.net>"))
	check(msg.To("Friend <friend@gmail.com>"))
	check(msg.Cc("pal@smallisp.example"))
	check(msg.Bcc("boss@smallisp.example", "archive@gmail.com"))
	msg.Subject("Quarterly numbers")
	msg.SetBodyString(mail.TypeTextPlain, "They are up.\n")

	res, err := m.SendMsg(context.Background(), msg)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RECIPIENT\tSTATUS\tVIA\tHOST\tWHY")
	for _, r := range res.Recipients {
		fmt.Fprintf(tw, "%s\t%v\t%v\t%s\t%s\n", r.Rcpt, r.Status, r.Via, r.Host, r.Route.Reason)
	}
	tw.Flush()
	if err != nil {
		log.Fatal(err)
	}

	fmt.Println()
	for _, s := range []struct {
		name string
		srv  *mailtest.Server
	}{{"relay", relay}, {"mx.smallisp.example", mx}} {
		for _, msg := range s.srv.Messages() {
			fields := headerFields(msg.Data)
			bcc := "no Bcc header"
			if slices.ContainsFunc(fields, func(f string) bool { return strings.EqualFold(f, "Bcc") }) {
				bcc = "a Bcc header!"
			}
			fmt.Printf("%s got it for %s, with %s:\n    %s\n", s.name, strings.Join(msg.Rcpts, ", "), bcc, strings.Join(fields, " "))
		}
	}
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// headerFields lists the names of a message's header fields, in order.
func headerFields(data []byte) []string {
	var fields []string
	header, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	sc := bufio.NewScanner(bytes.NewReader(header))
	for sc.Scan() {
		if name, _, ok := strings.Cut(sc.Text(), ":"); ok && !strings.HasPrefix(name, " ") && !strings.HasPrefix(name, "\t") {
			fields = append(fields, name)
		}
	}
	return fields
}
