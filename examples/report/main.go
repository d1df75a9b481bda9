// Command report sends a small day of mail and prints what happened per
// provider and path: sent direct, via the relay, fallen back, deferred and
// failed by class, with the mean delivery time — Mailer.Stats, the same
// figures Config.MeterProvider exports to OpenTelemetry — and then the
// routes the Mailer learned from refusals (Mailer.Lessons).
//
// It is self-contained and uses public packages only: one SMTP server
// plays every MX host (it refuses some recipients the way real receivers
// do), another the relay, and a static Resolver stands in for DNS.
//
//	go run ./examples/report
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/mailroute"
)

func main() {
	mx, err := serve(mxPolicy)
	if err != nil {
		log.Fatal(err)
	}
	defer mx.Close()
	relay, err := serve(func(string) *smtp.SMTPError { return nil })
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close()

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		// In a real program: your relay's address and credentials, over TLS.
		Relay: &mailroute.Relay{Addr: relay.addr, InsecurePlaintextLoopback: true},
		// Here only: every MX host is this process, on a loopback port.
		Resolver: dns,
		Direct:   mailroute.DirectOptions{Port: mx.port},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 3 {
		for _, to := range []string{
			"ann@gmail.com", "bob@workspace.example", "cat@contoso.example", // big providers: the relay
			"dan@smallisp.example", "nobody@smallisp.example", // direct; one mailbox does not exist
			"eve@strictcorp.example", "fay@strictcorp-eu.example", // one MX site that blocks our IP
			"gus@greylisting.example", // greylists: deferred, retried later
			"hal@offline.example",     // its MX refuses connections
		} {
			to = strings.Replace(to, "@", fmt.Sprintf("+%d@", i), 1)
			msg := "From: a@example.net\r\nTo: " + to + "\r\nSubject: report\r\n\r\nhello\r\n"
			m.Send(ctx, "a@example.net", []string{to}, strings.NewReader(msg))
		}
	}

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PROVIDER / MX SITE\tPATH\tDELIVERED\tFELL BACK\tDEFERRED\tFAILED\tBY CLASS\tMEAN TIME")
	for _, r := range m.Stats().Rows {
		mean := "-"
		if r.Delivered > 0 {
			mean = (r.Latency / time.Duration(r.Delivered)).Round(time.Microsecond).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", r.Provider, r.Path, r.Delivered, r.FellBack, r.Deferred, r.Failed, classes(r.Classes), mean)
	}
	w.Flush()

	lessons, err := m.Lessons(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("\nlearned routes:")
	for _, l := range lessons {
		fmt.Println(" ", l)
	}
}

// classes formats failure counts by class: "mailbox 3, policy 1".
func classes(c map[string]int64) string {
	if len(c) == 0 {
		return "-"
	}
	var parts []string
	for k, v := range c {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// mxPolicy is how the receivers answer each recipient domain.
func mxPolicy(rcpt string) *smtp.SMTPError {
	switch {
	case strings.HasPrefix(rcpt, "nobody"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "Recipient address rejected: User unknown in virtual mailbox table"}
	case strings.Contains(rcpt, "@strictcorp"):
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org"}
	case strings.HasSuffix(rcpt, "@greylisting.example"):
		return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Recipient address rejected: Greylisted, see https://postgrey.schweikert.ch/help/greylisting.example.html"}
	}
	return nil
}

// dns is the example's DNS: MX hosts and their addresses.
var dns = staticResolver{
	mx: map[string][]string{
		"workspace.example":     {"aspmx.l.google.com"},
		"contoso.example":       {"contoso-example.mail.protection.outlook.com"},
		"smallisp.example":      {"mx1.smallisp.example"},
		"strictcorp.example":    {"mx1.strictcorp.example", "mx2.strictcorp.example"},
		"strictcorp-eu.example": {"mx2.strictcorp.example", "mx1.strictcorp.example"},
		"greylisting.example":   {"mx.greylisting.example"},
		"offline.example":       {"mx.offline.example"},
	},
	hosts: map[string]string{
		"mx1.smallisp.example":   "127.0.0.1",
		"mx1.strictcorp.example": "127.0.0.1",
		"mx2.strictcorp.example": "127.0.0.1",
		"mx.greylisting.example": "127.0.0.1",
		"mx.offline.example":     "127.0.0.9", // nothing listens there
	},
}

// staticResolver implements mailroute.Resolver from two maps.
type staticResolver struct {
	mx    map[string][]string
	hosts map[string]string
}

func (r staticResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	hosts, ok := r.mx[strings.TrimSuffix(name, ".")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	var out []*net.MX
	for i, h := range hosts {
		out = append(out, &net.MX{Host: h + ".", Pref: uint16(10 * (i + 1))})
	}
	return out, nil
}

func (r staticResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	ip, ok := r.hosts[strings.TrimSuffix(host, ".")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []net.IPAddr{{IP: net.ParseIP(ip)}}, nil
}

// server is an SMTP server on loopback that answers RCPT by a policy and
// accepts (and discards) every message.
type server struct {
	*smtp.Server
	addr string
	port int
}

func serve(policy func(rcpt string) *smtp.SMTPError) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{policy}, nil }))
	s.Domain = "mx.example"
	go s.Serve(ln)
	return &server{Server: s, addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port}, nil
}

type session struct{ policy func(string) *smtp.SMTPError }

func (s *session) Mail(string, *smtp.MailOptions) error { return nil }
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if e := s.policy(to); e != nil {
		return e
	}
	return nil
}
func (s *session) Data(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
func (s *session) Reset()                 {}
func (s *session) Logout() error          { return nil }
