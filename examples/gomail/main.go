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
	"io"
	"log"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/wneessen/go-mail"

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
		Smarthost: &mailroute.Relay{
			Addr:     relay.addr,
			Username: "app",
			Password: "secret",
			// Only because this relay is on loopback without TLS; a real
			// relay is reached over verified TLS.
			InsecurePlaintextLoopback: true,
		},
		// In a real program these two stay zero: the system resolver and
		// port 25. Here they point at the servers in this process.
		Resolver: mailroute.DNSServer(dns.Addr),
		Direct:   mailroute.DirectOptions{Port: mx.port},
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
	for _, s := range []*server{relay, mx} {
		for _, d := range s.take() {
			bcc := "no Bcc header"
			if slices.ContainsFunc(d.fields, func(f string) bool { return strings.EqualFold(f, "Bcc") }) {
				bcc = "a Bcc header!"
			}
			fmt.Printf("%s got it for %s, with %s:\n    %s\n", s.name, strings.Join(d.rcpts, ", "), bcc, strings.Join(d.fields, " "))
		}
	}
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
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

// delivery is one accepted message: its envelope recipients and the names
// of its header fields.
type delivery struct {
	rcpts  []string
	fields []string
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
	s.srv.AllowInsecureAuth = true // loopback only, see Relay above
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
	srv   *server
	user  string
	rcpts []string
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

func (s *session) Mail(string, *gosmtp.MailOptions) error {
	if s.srv.users != nil && s.user == "" {
		return gosmtp.ErrAuthRequired
	}
	return nil
}

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	d := delivery{rcpts: s.rcpts}
	header, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	sc := bufio.NewScanner(bytes.NewReader(header))
	for sc.Scan() {
		if name, _, ok := strings.Cut(sc.Text(), ":"); ok && !strings.HasPrefix(name, " ") && !strings.HasPrefix(name, "\t") {
			d.fields = append(d.fields, name)
		}
	}
	s.srv.mu.Lock()
	s.srv.got = append(s.srv.got, d)
	s.srv.mu.Unlock()
	return nil
}

func (s *session) Reset() { s.rcpts = nil }

func (s *session) Logout() error { return nil }

var _ gosmtp.AuthSession = (*session)(nil)
