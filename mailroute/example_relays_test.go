package mailroute_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

// Several relays: mail from brand.example goes through that brand's own
// relay account, everyone else's through the default, and when the
// default cannot be reached the backup takes over. (The relays run
// in-process here; the default one is down.)
func ExampleConfig_relays() {
	ca, _ := mailtest.NewCA()
	start := func() *mailtest.Server {
		s, err := mailtest.NewServer(mailtest.Options{TLS: ca.ServerConfig("127.0.0.1"), Users: map[string]string{"app": "secret"}})
		if err != nil {
			log.Fatal(err)
		}
		return s
	}
	down, brand, backup := start(), start(), start()
	down.Close()
	defer brand.Close()
	defer backup.Close()
	relay := func(s *mailtest.Server) *mailroute.Relay {
		return &mailroute.Relay{Addr: s.Addr, Username: "app", Password: "secret", TLSConfig: ca.ClientConfig()}
	}
	def := relay(down)
	def.Failover = "backup"

	m, err := mailroute.New(mailroute.Config{
		Hostname:     "mail.example.net",
		Router:       mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Relayed}},
		Relay:        def,
		Relays:       map[string]*mailroute.Relay{"brand": relay(brand), "backup": relay(backup)},
		SenderRelays: map[string]string{"brand.example": "brand"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	for _, from := range []string{"news@brand.example", "app@example.net"} {
		if _, err := m.Send(context.Background(), from, []string{"you@example.org"}, strings.NewReader("Subject: hi\r\n\r\nHi.\r\n")); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("brand relay got mail from", brand.Messages()[0].From)
	fmt.Println("backup relay got mail from", backup.Messages()[0].From)
	// Output:
	// brand relay got mail from news@brand.example
	// backup relay got mail from app@example.net
}

// A Send that delivered to some recipients and not others says which, so
// that a retry goes only to those that may still get it.
func ExampleSendError() {
	mx, _ := mailtest.NewServer(mailtest.Options{Refuse: func(rcpt string) *mailtest.Reply {
		switch {
		case strings.HasPrefix(rcpt, "gone"):
			return &mailtest.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "no such user"}
		case strings.HasPrefix(rcpt, "full"):
			return &mailtest.Reply{Code: 452, Enhanced: [3]int{4, 2, 2}, Message: "mailbox full"}
		}
		return nil
	}})
	defer mx.Close()
	m, _ := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Resolver: &mailtest.Resolver{Hosts: map[string][]string{"example.org": {"127.0.0.1"}}},
		Direct:   mailroute.DirectOptions{Port: mx.Port()},
	})
	defer m.Close()

	_, err := m.Send(context.Background(), "me@example.net",
		[]string{"ann@example.org", "gone@example.org", "full@example.org"}, strings.NewReader("Subject: hi\r\n\r\nHi.\r\n"))
	var se *mailroute.SendError
	if errors.As(err, &se) {
		fmt.Println("delivered:", se.Delivered)
		fmt.Println("retry later:", se.Deferred)
		fmt.Println("never:", se.Failed)
	}
	// Output:
	// delivered: [ann@example.org]
	// retry later: [full@example.org]
	// never: [gone@example.org]
}

// Microsoft 365 with OAuth 2.0 (basic SMTP AUTH is being turned off): an
// app registration with the SMTP.SendAsApp permission gets tokens by the
// client credentials grant, and the relay asks for a fresh one for each
// new session. Not run: it needs the tenant.
func ExampleRelay_tokenSource() {
	conf := &clientcredentials.Config{
		ClientID:     os.Getenv("AZURE_CLIENT_ID"),
		ClientSecret: os.Getenv("AZURE_CLIENT_SECRET"),
		TokenURL:     "https://login.microsoftonline.com/" + os.Getenv("AZURE_TENANT_ID") + "/oauth2/v2.0/token",
		Scopes:       []string{"https://outlook.office365.com/.default"},
	}
	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Relay: &mailroute.Relay{
			Addr:        "smtp.office365.com:587",
			Username:    "app@contoso.example", // the mailbox the app sends as
			TokenSource: oauth2.ReuseTokenSource(nil, conf.TokenSource(context.Background())),
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
}
