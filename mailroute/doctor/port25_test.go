package doctor_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/doctor"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

// A Mailer whose direct connections to three MX sites are refused while
// its relay delivers concludes that port 25 is blocked, and CheckMailer
// reports it; Check, which has no Mailer, cannot.
func TestCheckMailerReportsBlockedPort25(t *testing.T) {
	relay, err := mailtest.NewServer(mailtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	// A port nothing listens on: every direct connection is refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()

	res := &mailtest.Resolver{MX: map[string][]string{}, Hosts: map[string][]string{}}
	for _, d := range []string{"one.test", "two.test", "three.test"} {
		res.MX[d] = []string{"mx." + d}
		res.Hosts["mx."+d] = []string{"127.0.0.1"}
	}
	res.TXT = map[string][]string{"sender.test": {"v=spf1 -all"}}
	cfg := mailroute.Config{
		Hostname: "mail.sender.test",
		Resolver: res,
		Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}},
		Direct:   mailroute.DirectOptions{Port: closed},
		Relay:    &mailroute.Relay{Addr: relay.Addr, InsecurePlaintextLoopback: true},
	}
	m, err := mailroute.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	for _, d := range []string{"one.test", "two.test", "three.test"} {
		r, _ := m.Send(ctx, "a@sender.test", []string{"x@" + d}, strings.NewReader("Subject: t\r\n\r\nt\r\n"))
		if got := r.Recipients[0]; got.Status != mailroute.Delivered || !got.Fallback {
			t.Fatalf("%s: %+v", d, got)
		}
	}

	opts := doctor.Options{Domain: "sender.test", NoDirect: true}
	rep, err := doctor.CheckMailer(ctx, m, opts)
	if err != nil {
		t.Fatal(err)
	}
	var found []doctor.Finding
	for _, f := range rep.Findings {
		if f.Check == "port 25" {
			found = append(found, f)
		}
	}
	if len(found) != 1 || found[0].Status != doctor.Problem || found[0].Path != mailroute.Direct ||
		!strings.HasPrefix(found[0].Found, "outbound port 25 appears blocked: connections to 3 MX sites failed") {
		t.Errorf("port 25 findings: %+v\n%v", found, rep)
	}
	rep, err = doctor.Check(ctx, m.Config(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Findings {
		if f.Check == "port 25" {
			t.Errorf("Check without the Mailer found %+v", f)
		}
	}
}
