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
	"io"
	"log"
	"net"
	"net/smtp"
	"strconv"
	"sync"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/mailroute"
)

func main() {
	// The world: DNS for smallisp.example, its MX, and the relay.
	dns, err := dnstest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer dns.Close()
	mx := startServer("mx.smallisp.example", nil)
	defer mx.close()
	relay := startServer("relay", map[string]string{"app": "secret"})
	defer relay.close()
	dns.MX("smallisp.example", "mx.smallisp.example")
	dns.Host("mx.smallisp.example", "127.0.0.1")

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		// In a real program these two stay zero: the system resolver and
		// port 25. Here they point at the servers in this process.
		Resolver: mailroute.DNSServer(dns.Addr),
		Direct:   mailroute.DirectOptions{Port: mx.port},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	relayAddr := net.JoinHostPort("localhost", strconv.Itoa(relay.port)) // "localhost:587" above
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
		for _, s := range []*server{relay, mx} {
			for _, d := range s.take() {
				fmt.Printf("    got:  %s (%s), from %s%s\n", s.name, s.addr, d.from, d.user)
			}
		}
	}
}

// server is an SMTP server on loopback that records what it accepts; with
// users it requires AUTH PLAIN, as a submission relay does.
type server struct {
	name  string
	addr  string
	port  int
	users map[string]string
	srv   *gosmtp.Server

	mu  sync.Mutex
	got []delivery
}

type delivery struct {
	from, user string
}

func startServer(name string, users map[string]string) *server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	s := &server{name: name, addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port, users: users}
	s.srv = gosmtp.NewServer(gosmtp.BackendFunc(func(*gosmtp.Conn) (gosmtp.Session, error) {
		return &session{srv: s}, nil
	}))
	s.srv.Domain = name
	s.srv.AllowInsecureAuth = true // loopback only: see the package comment
	go s.srv.Serve(ln)
	return s
}

func (s *server) close() { s.srv.Close() }

// take returns the deliveries recorded since the last call.
func (s *server) take() []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	got := s.got
	s.got = nil
	return got
}

type session struct {
	srv        *server
	user, from string
}

func (s *session) AuthMechanisms() []string {
	if s.srv.users == nil {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if want, ok := s.srv.users[user]; !ok || pass != want {
			return gosmtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *gosmtp.MailOptions) error {
	if s.srv.users != nil && s.user == "" {
		return gosmtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(string, *gosmtp.RcptOptions) error { return nil }

func (s *session) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	d := delivery{from: s.from}
	if s.user != "" {
		d.user = ", authenticated as " + s.user
	}
	s.srv.mu.Lock()
	s.srv.got = append(s.srv.got, d)
	s.srv.mu.Unlock()
	return nil
}

func (s *session) Reset() { s.from = "" }

func (s *session) Logout() error { return nil }

var _ gosmtp.AuthSession = (*session)(nil)
