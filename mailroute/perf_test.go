package mailroute

// Exact counts behind the benchmarks: round trips and connections, never
// time. The round trips are counted by internal/latencyproxy (1 for the TCP
// connect plus 1 for every time the client waits for the server).

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/latencyproxy"
	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// perfProxy puts a latency proxy in front of target. The delay makes any
// client write that does not wait for the server's answer show up as an
// extra turn rather than race with it.
func perfProxy(t *testing.T, listen, target string) *latencyproxy.Proxy {
	t.Helper()
	p, err := latencyproxy.Start(latencyproxy.Options{Listen: listen, Target: target, Delay: 500 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// perfSends sends n messages one after the other, checking each was
// delivered, and returns the proxy's round-trip total after the first and
// after the last.
func perfSends(t *testing.T, m *Mailer, p *latencyproxy.Proxy, rcpt string, n int) (first, last int) {
	t.Helper()
	for i := range n {
		res, err := send(t, m, "a@sender.test", []string{rcpt}, string(bench2KiB))
		if err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		if r := res.Recipients[0]; r.Status != Delivered {
			t.Fatalf("message %d: %+v", i+1, r)
		}
		if i == 0 {
			first = p.RoundTrips()
		}
	}
	return first, p.RoundTrips()
}

// wantOneConnection checks that every message arrived on the server's
// first connection, and that there was only that one.
func wantOneConnection(t *testing.T, s *smtptest.Server, p *latencyproxy.Proxy, n int) {
	t.Helper()
	msgs := s.Messages()
	if len(msgs) != n {
		t.Fatalf("%d messages arrived, want %d", len(msgs), n)
	}
	for i, msg := range msgs {
		if msg.Conn != 1 || !bytes.Equal(msg.Data, bench2KiB) {
			t.Fatalf("message %d on connection %d (body intact: %v)", i+1, msg.Conn, bytes.Equal(msg.Data, bench2KiB))
		}
	}
	if s.Connections() != 1 || p.Connections() != 1 {
		t.Fatalf("%d connections at the server, %d at the proxy, want 1", s.Connections(), p.Connections())
	}
}

// N sequential Sends to the relay ride one connection: the first costs
// connect, greeting, EHLO and MAIL+RCPT+BDAT with the body (pipelined,
// CHUNKING: go-smtp's server offers it); every later one exactly 1 round
// trip, with no NOOP, RSET or EHLO in between.
func TestPerfSmarthostOneRoundTripPerMessage(t *testing.T) {
	const n = 10
	s := smtptest.Start(t, smtptest.Options{})
	p := perfProxy(t, "", s.Addr)
	m, err := New(Config{
		Hostname: "mail.sender.test",
		Router:   allSmarthost,
		Relay:    &Relay{Addr: p.Addr, InsecurePlaintextLoopback: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	first, last := perfSends(t, m, p, "b@dest.test", n)
	if first != 4 {
		t.Errorf("first message: %d round trips, want 4 (connect, greeting, EHLO, MAIL+RCPT+BDAT+body)", first)
	}
	if got := last - first; got != n-1 {
		t.Errorf("messages 2..%d: %d round trips, want exactly %d (1 each)", n, got, n-1)
	}
	if turns := p.Turns(); turns != 2+(n-1) {
		t.Errorf("%d client turns, want %d", turns, 2+(n-1))
	}
	wantOneConnection(t, s, p, n)
}

// The same over STARTTLS with AUTH: the session's setup costs more round
// trips (STARTTLS, the TLS 1.3 handshake, EHLO again, AUTH), the messages
// after the first still 1 each.
func TestPerfSmarthostTLSAuthOneRoundTripPerMessage(t *testing.T) {
	const n = 10
	w := newRelay(t, smtptest.Options{})
	p := perfProxy(t, "", w.s.Addr)
	r := w.relay()
	r.Addr = p.Addr
	r.TLSConfig = &tls.Config{RootCAs: w.ca.Pool(), ServerName: "127.0.0.1"}
	m := w.mailer(r)
	first, last := perfSends(t, m, p, "b@dest.test", n)
	// connect, greeting, EHLO, STARTTLS, handshake, EHLO, AUTH PLAIN (with
	// its initial response), MAIL+RCPT+BDAT with the body.
	if first != 8 {
		t.Errorf("first message: %d round trips, want 8", first)
	}
	if got := last - first; got != n-1 {
		t.Errorf("messages 2..%d: %d round trips, want exactly %d (1 each)", n, got, n-1)
	}
	wantOneConnection(t, w.s, p, n)
	for _, msg := range w.s.Messages() {
		if !msg.TLS || msg.AuthUser != "user@sender.test" {
			t.Fatalf("message over TLS %v as %q", msg.TLS, msg.AuthUser)
		}
	}
}

// N sequential Sends direct to one MX reuse one connection, at 1 round
// trip per message after the first (MAIL+RCPT+BDAT with the body).
func TestPerfDirectReusesOneConnection(t *testing.T) {
	const n = 10
	w := newDirectWorld(t)
	s := w.mx("backend.dest.test", "127.0.0.1", smtptest.Options{})
	// The MX host's address is the proxy's, on the world's port.
	p := perfProxy(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(w.port)), s.Addr)
	w.dns.Host("mx.dest.test", "127.0.0.2")
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{})
	first, last := perfSends(t, m, p, "b@dest.test", n)
	if first != 4 {
		t.Errorf("first message: %d round trips, want 4", first)
	}
	if got := last - first; got != n-1 {
		t.Errorf("messages 2..%d: %d round trips, want exactly %d (1 each)", n, got, n-1)
	}
	wantOneConnection(t, s, p, n)
	if q := w.dns.Queries("dest.test.", "MX"); q != 1 {
		t.Errorf("%d MX queries for %d messages, want 1 (cached)", q, n)
	}
	// Not asserted: the MX host's address is looked up again for every
	// message (see the performance notes in README.md).
	t.Logf("DNS queries for %d messages: MX %d, A %d, AAAA %d", n,
		w.dns.Queries("dest.test.", "MX"), w.dns.Queries("mx.dest.test.", "A"), w.dns.Queries("mx.dest.test.", "AAAA"))
}

// One message to 1,000 recipients over 100 domains, each with its own MX
// host: exactly one connection per MX host, one transaction each; a second
// Send right after reuses all of them.
func TestPerfFanOutOneConnectionPerMX(t *testing.T) {
	const domains, per = 100, 10
	w := newDirectWorld(t)
	servers := make([]*smtptest.Server, domains)
	var rcpts []string
	for d := range domains {
		host := fmt.Sprintf("mx%03d.test", d+1)
		servers[d] = w.mx(host, fmt.Sprintf("127.0.1.%d", d+1), smtptest.Options{})
		domain := fmt.Sprintf("d%03d.test", d+1)
		w.dns.MX(domain, host)
		for u := range per {
			rcpts = append(rcpts, fmt.Sprintf("u%d@%s", u, domain))
		}
	}
	m := w.mailer(Config{})
	dialer := &countingDialer{}
	m.testDialer = dialer
	for round := 1; round <= 2; round++ {
		res, err := send(t, m, "a@sender.test", rcpts, string(bench2KiB))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, r := range res.Recipients {
			if r.Status != Delivered {
				t.Fatalf("round %d: %+v", round, r)
			}
		}
		total := 0
		for d, s := range servers {
			total += s.Connections()
			msgs := s.Messages()
			if s.Connections() != 1 || len(msgs) != round || len(msgs[round-1].Rcpts) != per || msgs[round-1].Conn != 1 {
				t.Fatalf("round %d, MX %d: %d connections, %d messages", round, d+1, s.Connections(), len(msgs))
			}
		}
		if total != domains {
			t.Fatalf("round %d: %d connections in all, want %d (one per MX host)", round, total, domains)
		}
	}
	if n := dialer.open.Load(); n != domains {
		t.Errorf("%d sessions open after the sends, want %d (pooled)", n, domains)
	}
}

// The messages of these tests and of the benchmarks (bench_test.go).

const (
	benchFrom = "sender@bench.test"
	benchRcpt = "rcpt@dest.test"
)

// benchMessage returns a canonical message of exactly size octets: a few
// header fields, then 76-character lines, one of them starting with a dot
// (so dot-stuffing is exercised).
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.Grow(size)
	b.WriteString("From: Sender <" + benchFrom + ">\r\nTo: <" + benchRcpt + ">\r\nSubject: benchmark\r\n" +
		"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\nMessage-ID: <bench@bench.test>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:76] + "\r\n"
	b.WriteString("." + line[1:])
	for b.Len()+len(line)+3 <= size {
		b.WriteString(line)
	}
	b.WriteString(strings.Repeat("x", size-b.Len()-2) + "\r\n")
	return b.Bytes()
}

var bench2KiB = benchMessage(2048)
