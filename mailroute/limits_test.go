package mailroute

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// dialCounter counts the connections a Mailer attempts.
type dialCounter struct{ n atomic.Int32 }

func (d *dialCounter) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

// 500 MX hosts whose names do not resolve: ten names are looked up, and
// the Send ends without a connection attempt.
func TestDirectHostLimit(t *testing.T) {
	w := newDirectWorld(t)
	w.freePort()
	var hosts []string
	for i := range 500 {
		hosts = append(hosts, fmt.Sprintf("mx%03d.many.test", i))
	}
	w.dns.MX("many.test", hosts...)
	m := w.mailer(Config{})
	d := &dialCounter{}
	m.testDialer = d
	res, _ := send(t, m, "a@sender.test", []string{"b@many.test"}, testBody)
	wantStatus(t, res, "b@many.test", Deferred)
	looked := 0
	for _, h := range hosts {
		if w.dns.Queries(h, "A")+w.dns.Queries(h, "AAAA") > 0 {
			looked++
		}
	}
	if looked != directHostLimit || d.n.Load() != 0 {
		t.Errorf("%d host names looked up, %d dials; want %d and 0", looked, d.n.Load(), directHostLimit)
	}
}

// Three MX hosts of three addresses each, all refusing connections: five
// addresses are tried, as Postfix's smtp_mx_address_limit.
func TestDirectAddressLimit(t *testing.T) {
	w := newDirectWorld(t)
	w.freePort()
	var hosts []string
	for i := range 3 {
		h := fmt.Sprintf("mx%d.dead.test", i)
		w.dns.Host(h, fmt.Sprintf("127.0.%d.1", i+1), fmt.Sprintf("127.0.%d.2", i+1), fmt.Sprintf("127.0.%d.3", i+1))
		hosts = append(hosts, h)
	}
	w.dns.MX("dead.test", hosts...) // preferences 10, 20, 30
	m := w.mailer(Config{})
	d := &dialCounter{}
	m.testDialer = d
	res, _ := send(t, m, "a@sender.test", []string{"b@dead.test"}, testBody)
	wantStatus(t, res, "b@dead.test", Deferred)
	if n := d.n.Load(); n != directAddressLimit {
		t.Errorf("%d addresses dialled, want %d", n, directAddressLimit)
	}
	if looked := w.dns.Queries("mx2.dead.test", "A"); looked != 0 {
		t.Errorf("the third host was looked up (%d), though two hosts already gave five addresses", looked)
	}
}

// Four MX hosts that all answer MAIL with 451: two sessions are tried, as
// Postfix's smtp_mx_session_limit.
func TestDirectSessionLimit(t *testing.T) {
	w := newDirectWorld(t)
	var servers []*smtptest.Server
	for i := range 4 {
		h := fmt.Sprintf("mx%d.busy.test", i)
		s := w.mx(h, fmt.Sprintf("127.0.%d.1", i+1), smtptest.Options{MailPolicy: func(string) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "busy"}
		}})
		servers = append(servers, s)
		w.dns.MX("busy.test", h)
	}
	m := w.mailer(Config{})
	res, _ := send(t, m, "a@sender.test", []string{"b@busy.test"}, testBody)
	r := wantStatus(t, res, "b@busy.test", Deferred)
	if !strings.Contains(fmt.Sprint(r.Err), "451") {
		t.Errorf("error %v, want the servers' 451", r.Err)
	}
	conns := 0
	for _, s := range servers {
		conns += s.Connections()
	}
	if conns != directSessionLimit {
		t.Errorf("%d sessions, want %d", conns, directSessionLimit)
	}
}

// A Send whose context ends while MX host lookups time out returns, and
// no DNS query goes out after it has.
func TestDirectStopsDNSWhenContextEnds(t *testing.T) {
	w := newDirectWorld(t)
	var hosts []string
	for i := range 50 {
		h := fmt.Sprintf("mx%02d.slow.test", i)
		hosts = append(hosts, h)
		w.dns.Drop(h)
	}
	w.dns.MX("slow.test", hosts...)
	m := w.mailer(Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, _ := m.Send(ctx, "a@sender.test", []string{"b@slow.test"}, strings.NewReader(testBody))
	wantStatus(t, res, "b@slow.test", Deferred)
	after := w.dns.TotalQueries()
	time.Sleep(300 * time.Millisecond)
	if n := w.dns.TotalQueries(); n != after {
		t.Errorf("%d DNS queries after Send returned", n-after)
	}
}

// SendMail has no context: Config.SendMailTimeout bounds it. An ad-hoc
// loopback relay that drips its greeting (a second per octet, so about 20
// seconds under the per-reply timeouts alone) is given up at the deadline.
func TestSendMailTotalDeadline(t *testing.T) {
	srv := smtptest.StartFault(t, smtptest.FaultOptions{
		Faults: []smtptest.Fault{{Step: smtptest.StepGreeting, Do: smtptest.Drip, Delay: time.Second}}})
	m, err := New(Config{Hostname: "client.test", SendMailTimeout: 200 * time.Millisecond,
		Router: Rules{{Domains: []string{"*"}, Via: Relayed}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	err = m.SendMail(srv.Addr, nil, "a@x.test", []string{"b@y.test"}, []byte(testBody))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the SendMail deadline", err)
	}
}
