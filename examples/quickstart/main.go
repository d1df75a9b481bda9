// Command quickstart sends one message the way mailroute does: the Gmail
// and Microsoft 365 recipients through an authenticated relay, the small
// ISP direct to its MX, and a recipient whose MX refuses the sender's IP
// (a block list) direct first and then, by fallback, through the relay.
//
// It is self-contained: the relay (STARTTLS and AUTH) and two MX hosts
// are mailroute/mailtest servers in this process, on loopback, and DNS is a
// mailtest.Resolver, so it runs anywhere with only Go installed. It imports
// only public packages: copy it into your own module as it is.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

const message = "From: Ada <ada@example.net>\r\n" +
	"To: friend@gmail.com, it@contoso.example, pal@smallisp.example, boss@strictcorp.example\r\n" +
	"Subject: Hello from mailroute\r\n" +
	"\r\n" +
	"Each of you got this the way it is most likely to arrive.\r\n"

func main() {
	world, err := startWorld()
	if err != nil {
		log.Fatal(err)
	}
	defer world.close()

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net", // the EHLO name of direct delivery
		Relay: &mailroute.Relay{
			Addr:      world.relay.Addr,
			Username:  "ada@example.net",
			Password:  "relay-password",
			TLSConfig: world.ca.ClientConfig(), // nil in real programs: system roots
		},
		// Here only: the world is on loopback.
		Resolver: world.dns,
		Direct:   mailroute.DirectOptions{Port: world.smallISP.Port()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := m.Send(ctx, "ada@example.net", []string{
		"friend@gmail.com",
		"it@contoso.example",
		"pal@smallisp.example",
		"boss@strictcorp.example",
	}, strings.NewReader(message))
	var se *mailroute.SendError
	if err != nil && !errors.As(err, &se) {
		log.Fatal(err) // nothing was attempted: a malformed address or message
	}

	// One row per delivery step: a recipient that fell back has two, the
	// direct attempt and the relay's.
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "RECIPIENT\tROUTE\tREASON\tSERVER\tOUTCOME")
	for _, r := range res.Recipients {
		if r.Fallback {
			var direct *mailroute.Error
			errors.As(r.DirectErr, &direct)
			fmt.Fprintf(w, "%s\t%v\t%s\t%s\trefused: %s\n", r.Rcpt, mailroute.Direct, r.Route.Reason, direct.Host, reply(direct))
			fmt.Fprintf(w, "\t%v\tfallback after %s from %s\t%s\t%v\n", r.Via, reply(direct), direct.Host, r.Host, r.Status)
			continue
		}
		fmt.Fprintf(w, "%s\t%v\t%s\t%s\t%v\n", r.Rcpt, r.Via, r.Route.Reason, r.Host, r.Status)
	}
	w.Flush()
	if se != nil {
		fmt.Println("\nnot delivered:", se)
	}

	fmt.Println()
	for _, s := range []struct {
		name string
		srv  *mailtest.Server
	}{{"relay", world.relay}, {"mx1.smallisp.example", world.smallISP}, {"mx.strictcorp.example", world.strict}} {
		for _, msg := range s.srv.Messages() {
			fmt.Printf("%s received a message for %v (TLS %v, authenticated as %q)\n",
				s.name, msg.Rcpts, msg.TLS, msg.AuthUser)
		}
	}
}

// reply shortens a refusal to its codes, "550 5.7.1", or its class when
// no server answered ("connection").
func reply(e *mailroute.Error) string {
	if e.Code == 0 {
		return mailroute.Classify(e).String()
	}
	return fmt.Sprintf("%d %s", e.Code, e.Enhanced)
}

// world is everything a real deployment reaches over the internet.
type world struct {
	dns      *mailtest.Resolver
	ca       *mailtest.CA
	relay    *mailtest.Server // the relay: STARTTLS + AUTH
	smallISP *mailtest.Server // an MX that accepts us
	strict   *mailtest.Server // an MX that blocks our IP
}

func startWorld() (*world, error) {
	w := &world{}
	var err error
	if w.ca, err = mailtest.NewCA(); err != nil {
		return nil, err
	}
	w.relay, err = mailtest.NewServer(mailtest.Options{
		Hostname: "relay.example",
		TLS:      w.ca.ServerConfig("127.0.0.1"),
		Users:    map[string]string{"ada@example.net": "relay-password"},
	})
	if err != nil {
		return nil, err
	}
	// Both MX hosts listen on one port, as real ones all listen on 25.
	for range 10 {
		w.smallISP, err = mailtest.NewServer(mailtest.Options{Hostname: "mx1.smallisp.example"})
		if err != nil {
			return nil, err
		}
		w.strict, err = mailtest.NewServer(mailtest.Options{
			Addr:     w.smallISP.AddrOn("127.0.0.2"),
			Hostname: "mx.strictcorp.example",
			Refuse: func(string) *mailtest.Reply {
				return &mailtest.Reply{Code: 550, Enhanced: [3]int{5, 7, 1},
					Message: "Service unavailable; client [127.0.0.1] blocked using zen.spamhaus.org"}
			},
		})
		if err == nil {
			break
		}
		w.smallISP.Close() // the port was taken on 127.0.0.2: try another
	}
	if err != nil {
		return nil, err
	}
	w.dns = &mailtest.Resolver{
		MX: map[string][]string{
			"gmail.com":          {"gmail-smtp-in.l.google.com"},
			"contoso.example":    {"contoso-example.mail.protection.outlook.com"},
			"smallisp.example":   {"mx1.smallisp.example"},
			"strictcorp.example": {"mx.strictcorp.example"},
		},
		Hosts: map[string][]string{
			"mx1.smallisp.example":  {"127.0.0.1"},
			"mx.strictcorp.example": {"127.0.0.2"},
		},
	}
	return w, nil
}

func (w *world) close() {
	for _, s := range []*mailtest.Server{w.relay, w.smallISP, w.strict} {
		if s != nil {
			s.Close()
		}
	}
}
