package mailroute

// Routes learned from refusals, the blocked-port-25 detector and the
// outcome figures against the real Postfix (internal/peers): direct to its
// receiver on PostfixPort, relayed through its submission port. The
// in-process DNS server puts two recipient domains Postfix accepts on one
// MX host, so they form one site.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/peertest"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// wireDialer dials for real and keeps what the client wrote, so a test can
// tell which recipients a server was offered (the tests use NoTLS, so the
// commands are readable).
type wireDialer struct {
	dials atomic.Int64
	mu    sync.Mutex
	wrote bytes.Buffer
}

func (d *wireDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.dials.Add(1)
	return &wireConn{Conn: c, d: d}, nil
}

func (d *wireDialer) offered(rcpt string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Contains(bytes.ToLower(d.wrote.Bytes()), []byte("rcpt to:<"+strings.ToLower(rcpt)+">"))
}

type wireConn struct {
	net.Conn
	d *wireDialer
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.d.mu.Lock()
	c.d.wrote.Write(p)
	c.d.mu.Unlock()
	return c.Conn.Write(p)
}

// requireRepblock checks that the running Postfix has the repblock* rule
// of internal/peers/postfix.sh. A Postfix started before the rule was added
// lacks it until restarted: the test is skipped then, except in CI, which
// starts the peers itself and must run it.
func requireRepblock(t *testing.T, env peertest.Env) {
	t.Helper()
	c, err := smtp.Dial(fmt.Sprintf("127.0.0.1:%d", env.PostfixPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Hello("probe.sender.test")
	if err := c.Mail("a@sender.test"); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt("repblock-probe@example.org")
	c.Reset()
	var te *textproto.Error
	if errors.As(err, &te) && te.Code == 554 && strings.Contains(te.Msg, "blocked using zen.spamhaus.org") {
		return
	}
	msg := fmt.Sprintf("the running Postfix lacks the repblock* rule of internal/peers/postfix.sh (RCPT got %v); restart the peers", err)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// learnPeers is a Mailer aimed at the real Postfix with a site of two
// domains, example.org and amx.test, on one MX host.
type learnPeers struct {
	env   peertest.Env
	dns   *dnstest.Server
	wire  *wireDialer
	clock *fakeClock
}

func newLearnPeers(t *testing.T) *learnPeers {
	env := peertest.Require(t)
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	dns.Host("mx.learn.test", "127.0.0.1")
	dns.MX("example.org", "mx.learn.test")
	dns.MX("amx.test", "mx.learn.test")
	return &learnPeers{env: env, dns: dns, wire: &wireDialer{}, clock: newFakeClock()}
}

func (p *learnPeers) mailer(t *testing.T, cfg Config) *Mailer {
	t.Helper()
	cfg.Hostname = "mail.sender.test"
	cfg.Resolver = DNSServer(p.dns.Addr)
	cfg.Direct.Port = p.env.PostfixPort
	cfg.Direct.TLS = NoTLS
	cfg.Relay = &Relay{Addr: p.env.SubmissionAddr, Username: p.env.SmarthostUser, Password: p.env.SmarthostPass,
		TLSConfig: &tls.Config{RootCAs: p.env.CertPool(t)}}
	cfg.Router = Rules{{Domains: []string{"*"}, Via: Direct}}
	cfg.now = p.clock.Now
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.testDialer = p.wire
	t.Cleanup(func() { m.Close() })
	return m
}

func TestPeersLearnedRouteFromPostfix(t *testing.T) {
	p := newLearnPeers(t)
	requireRepblock(t, p.env)
	ctx := context.Background()
	tag := fmt.Sprint(time.Now().UnixNano())
	sp := newMemQueue()
	m := p.mailer(t, Config{Queue: sp, Learning: Learning{TTL: time.Hour}})

	// Postfix refuses the sender's "reputation": the recipient falls back
	// to the relay, and the site is learned.
	blocked := "repblock-" + tag + "@example.org"
	res, _ := send(t, m, "a@sender.test", []string{blocked}, testBody)
	if r := wantStatus(t, res, blocked, Delivered); !r.Fallback || Classify(r.DirectErr) != ClassPolicy {
		t.Fatalf("refused recipient: %+v", r)
	}
	lessons, err := m.Lessons(ctx)
	if err != nil || len(lessons) != 1 || lessons[0].Site != "mx.learn.test" || !strings.Contains(lessons[0].Verdict, "blocked using zen.spamhaus.org") {
		t.Fatalf("Lessons = %+v, %v", lessons, err)
	}

	// The next message, to the other domain on that MX host, never
	// reaches Postfix's receiver: no new connection, no RCPT.
	dials := p.wire.dials.Load()
	other := "learned-" + tag + "@amx.test"
	body, id := uniqueBody(t)
	res, err = send(t, m, "a@sender.test", []string{other}, body)
	if err != nil {
		t.Fatal(err)
	}
	if r := wantStatus(t, res, other, Delivered); r.Via != Relayed || r.Fallback || !strings.HasPrefix(r.Route.Reason, "learned: MX site mx.learn.test") {
		t.Errorf("other domain: %+v", r)
	}
	if n := p.wire.dials.Load() - dials; n != 0 || p.wire.offered(other) {
		t.Errorf("the refusing MX got %d connections / the recipient", n)
	}
	p.env.WaitMaildir(t, p.env.SubmittedMaildir, peertest.HeaderIs("Message-ID", id), 10*time.Second)

	// A restart on the same store keeps the lesson.
	m.Close()
	m2 := p.mailer(t, Config{Queue: sp, Learning: Learning{TTL: time.Hour}})
	if route, _ := m2.Route(ctx, "amx.test"); route.Via != Relayed || !strings.Contains(route.Reason, "blocked using zen.spamhaus.org") {
		t.Errorf("after a restart the dry run says %+v", route)
	}

	// The TTL runs out; the probe is refused again: renewed.
	p.clock.Advance(61 * time.Minute)
	probe1 := "repblock-probe1-" + tag + "@amx.test"
	send(t, m2, "a@sender.test", []string{probe1}, testBody)
	if !p.wire.offered(probe1) {
		t.Error("the first probe did not reach Postfix")
	}
	lessons, _ = m2.Lessons(ctx)
	if len(lessons) != 1 || !lessons[0].Until.Equal(p.clock.Now().Add(time.Hour)) {
		t.Fatalf("after a refused probe: %+v", lessons)
	}

	// Next time the probe is accepted: the lesson is forgotten.
	p.clock.Advance(61 * time.Minute)
	probe2 := "probe2-" + tag + "@amx.test"
	body, id = uniqueBody(t)
	res, _ = send(t, m2, "a@sender.test", []string{probe2}, body)
	if r := wantStatus(t, res, probe2, Delivered); r.Via != Direct || r.Fallback {
		t.Errorf("accepted probe: %+v", r)
	}
	p.env.WaitMaildir(t, p.env.PostfixMaildir, peertest.HeaderIs("Message-ID", id), 10*time.Second)
	if lessons, _ := m2.Lessons(ctx); len(lessons) != 0 {
		t.Errorf("after an accepted probe: %+v", lessons)
	}
}

// Direct connections to three sites fail (nothing listens on their
// addresses), the relay works: port 25 is found blocked, Postfix's
// receiver is not tried while it holds, and the probe after the hold
// brings direct delivery back.
func TestPeersBlockedPort25(t *testing.T) {
	p := newLearnPeers(t)
	ctx := context.Background()
	tag := fmt.Sprint(time.Now().UnixNano())
	for i := 1; i <= 3; i++ {
		host := fmt.Sprintf("mx.dead%d.test", i)
		p.dns.Host(host, fmt.Sprintf("127.0.0.%d", 20+i))
		p.dns.MX(fmt.Sprintf("dead%d.test", i), host)
	}
	m := p.mailer(t, Config{})
	for i := 1; i <= 3; i++ {
		rcpt := fmt.Sprintf("x-%s@dead%d.test", tag, i)
		res, _ := send(t, m, "a@sender.test", []string{rcpt}, testBody)
		if r := wantStatus(t, res, rcpt, Delivered); !r.Fallback || Classify(r.DirectErr) != ClassConnection {
			t.Fatalf("%s: %+v", rcpt, r)
		}
	}
	dials := p.wire.dials.Load()
	rcpt := "while-blocked-" + tag + "@example.org"
	res, _ := send(t, m, "a@sender.test", []string{rcpt}, testBody)
	if r := wantStatus(t, res, rcpt, Delivered); r.Via != Relayed || !strings.HasPrefix(r.Route.Reason, "outbound port 25 appears blocked") {
		t.Errorf("while blocked: %+v", r)
	}
	if p.wire.dials.Load() != dials {
		t.Error("a direct connection was made while port 25 was found blocked")
	}
	if lessons, _ := m.Lessons(ctx); len(lessons) != 1 || lessons[0].Site != "*" || !strings.HasPrefix(lessons[0].Reply, "connections to") {
		t.Errorf("while blocked, Lessons = %+v", lessons)
	}

	p.clock.Advance(61 * time.Minute)
	back := "back-" + tag + "@example.org"
	body, id := uniqueBody(t)
	res, _ = send(t, m, "a@sender.test", []string{back}, body)
	if r := wantStatus(t, res, back, Delivered); r.Via != Direct {
		t.Errorf("probe: %+v", r)
	}
	p.env.WaitMaildir(t, p.env.PostfixMaildir, peertest.HeaderIs("Message-ID", id), 10*time.Second)
	if lessons, _ := m.Lessons(ctx); len(lessons) != 0 {
		t.Errorf("after the probe: %+v", lessons)
	}
}

// The figures of a Send to Postfix through the peers' DNS: one delivered,
// one refused (550 5.1.1), one deferred (450 4.2.0), read with the SDK's
// manual reader.
func TestPeersMetrics(t *testing.T) {
	env := peertest.Require(t)
	reader := sdkmetric.NewManualReader()
	m := peerMailer(t, env, Config{
		Router:        Rules{{Domains: []string{"*"}, Via: Direct}},
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	tag := fmt.Sprint(time.Now().UnixNano())
	send(t, m, "a@sender.test", []string{"ok-" + tag + "@example.org", "reject-" + tag + "@example.org", "tempfail-" + tag + "@example.org"}, testBody)
	sums, hist := collect(t, reader)
	const site = "mailroute.provider=mx1.example.org,mx2.example.org"
	want := map[string]int64{
		"mailroute.delivery.recipients|mailroute.outcome=delivered,mailroute.path=direct," + site:                   1,
		"mailroute.delivery.recipients|error.type=mailbox,mailroute.outcome=failed,mailroute.path=direct," + site:   1,
		"mailroute.delivery.recipients|error.type=mailbox,mailroute.outcome=deferred,mailroute.path=direct," + site: 1,
	}
	for k, v := range want {
		if sums[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, sums[k], v, sums)
		}
	}
	if n := hist["mailroute.delivery.duration|mailroute.path=direct,"+site]; n != 1 {
		t.Errorf("duration recorded %d times, want 1", n)
	}
}
