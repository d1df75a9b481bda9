// Command quickstart sends one message the way mailroute does: the Gmail
// and Microsoft 365 recipients through an authenticated smarthost, the small
// ISP direct to its MX, and a recipient whose MX refuses the sender's IP
// (a block list) direct first and then, by fallback, through the smarthost.
//
// It is self-contained: a DNS server and three SMTP servers (two MX hosts
// and the smarthost, with STARTTLS and AUTH) run in this process on
// loopback, so it runs anywhere with only Go installed.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
	"github.com/mailroute/go-mailroute/mailroute"
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
		Smarthost: &mailroute.Relay{
			Addr:      world.relay.Addr,
			Username:  "ada@example.net",
			Password:  "relay-password",
			TLSConfig: &tls.Config{RootCAs: world.ca.Pool()}, // nil in real programs: system roots
		},
		// Here only: the world is on loopback.
		Resolver: mailroute.DNSServer(world.dns.Addr),
		Direct:   mailroute.DirectOptions{Port: world.mxPort},
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

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "RECIPIENT\tROUTE\tREASON\tFALLBACK\tSERVER\tSTATUS")
	for _, r := range res.Recipients {
		fallback := "-"
		if r.Fallback {
			fallback = "yes: " + firstLine(r.DirectErr)
		}
		fmt.Fprintf(w, "%s\t%v\t%s\t%s\t%s\t%v\n", r.Rcpt, r.Via, r.Route.Reason, fallback, r.Host, r.Status)
	}
	w.Flush()
	if err != nil {
		fmt.Println("\nnot delivered:", err)
	}

	fmt.Println()
	for _, s := range []struct {
		name string
		srv  *smtptest.Server
	}{{"smarthost", world.relay}, {"mx1.smallisp.example", world.smallISP}, {"mx.strictcorp.example", world.strict}} {
		for _, msg := range s.srv.Messages() {
			fmt.Printf("%s received a message for %v (TLS %v, authenticated as %q)\n",
				s.name, msg.Rcpts, msg.TLS, msg.AuthUser)
		}
	}
}

// firstLine shortens the direct failure that caused a fallback to its codes.
func firstLine(err error) string {
	var e *mailroute.Error
	if errors.As(err, &e) && e.Code != 0 {
		return strconv.Itoa(e.Code) + " " + e.Enhanced.String()
	}
	return mailroute.Classify(err).String()
}

// world is everything a real deployment reaches over the internet.
type world struct {
	dns      *dnstest.Server
	ca       *testpki.CA
	relay    *smtptest.Server // the smarthost: STARTTLS + AUTH
	smallISP *smtptest.Server // an MX that accepts us
	strict   *smtptest.Server // an MX that blocks our IP
	mxPort   int
}

func startWorld() (*world, error) {
	w := &world{}
	var err error
	if w.dns, err = dnstest.Start(); err != nil {
		return nil, err
	}
	if w.ca, err = testpki.NewCA(); err != nil {
		return nil, err
	}
	w.relay, err = smtptest.Serve(smtptest.Options{
		Domain: "relay.example",
		TLS:    w.ca.ServerConfig("127.0.0.1"),
		Auth:   map[string]string{"ada@example.net": "relay-password"},
	})
	if err != nil {
		return nil, err
	}
	// Both MX hosts listen on one port, as real ones all listen on 25.
	for range 10 {
		w.smallISP, err = smtptest.Serve(smtptest.Options{Domain: "mx1.smallisp.example"})
		if err != nil {
			return nil, err
		}
		w.mxPort = w.smallISP.Port()
		w.strict, err = smtptest.Serve(smtptest.Options{
			Listen: net.JoinHostPort("127.0.0.2", strconv.Itoa(w.mxPort)),
			Domain: "mx.strictcorp.example",
			RcptPolicy: func(string) *smtp.SMTPError {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
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
	w.dns.MX("gmail.com", "gmail-smtp-in.l.google.com")
	w.dns.MX("contoso.example", "contoso-example.mail.protection.outlook.com")
	w.dns.MX("smallisp.example", "mx1.smallisp.example")
	w.dns.Host("mx1.smallisp.example", "127.0.0.1")
	w.dns.MX("strictcorp.example", "mx.strictcorp.example")
	w.dns.Host("mx.strictcorp.example", "127.0.0.2")
	return w, nil
}

func (w *world) close() {
	for _, s := range []*smtptest.Server{w.relay, w.smallISP, w.strict} {
		if s != nil {
			s.Close()
		}
	}
	w.dns.Close()
}
