package mailroute

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// 1,000 recipients over 50 domains whose MX hosts share one server: every
// recipient delivered exactly once, never more than MaxConnsPerHost (2)
// connections open to it, however many destinations run at once.
func TestSendThousandRecipientsFiftyDomains(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.shared.test", "127.0.0.1", smtptest.Options{})
	var rcpts []string
	for d := range 50 {
		domain := fmt.Sprintf("d%02d.test", d)
		w.dns.MX(domain, "mx.shared.test")
		for u := range 20 {
			rcpts = append(rcpts, fmt.Sprintf("u%02d@%s", u, domain))
		}
	}
	m := w.mailer(Config{Concurrency: 8})
	dialer := &countingDialer{}
	m.testDialer = dialer
	res, err := send(t, m, "a@sender.test", rcpts, testBody)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Recipients) != 1000 {
		t.Fatalf("%d results", len(res.Recipients))
	}
	for i, r := range res.Recipients {
		if r.Rcpt != rcpts[i] || r.Status != Delivered {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	var got []string
	for _, msg := range s.Messages() {
		got = append(got, msg.Rcpts...)
		if string(msg.Data) != testBody {
			t.Fatalf("body %q", msg.Data)
		}
	}
	sort.Strings(got)
	want := append([]string(nil), rcpts...)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("delivered %d recipients, want each of 1,000 exactly once", len(got))
	}
	if len(s.Messages()) != 50 {
		t.Errorf("%d transactions, want 50 (one per domain)", len(s.Messages()))
	}
	if n := dialer.peak.Load(); n > 2 || n < 1 {
		t.Errorf("%d connections open at once to one host, want at most 2", n)
	}
	if n := s.Connections(); n > 2 {
		t.Errorf("%d connections in all: sessions to one MX were not reused", n)
	}
}

// countingDialer counts the connections open at once, from the client's
// side (the server's count lags: it sees a close after the client does).
type countingDialer struct {
	open, peak atomic.Int64
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	n := d.open.Add(1)
	for p := d.peak.Load(); n > p && !d.peak.CompareAndSwap(p, n); p = d.peak.Load() {
	}
	return &countedConn{Conn: c, d: d}, nil
}

type countedConn struct {
	net.Conn
	d    *countingDialer
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.d.open.Add(-1) })
	return c.Conn.Close()
}

func TestSmarthostConnectionCap(t *testing.T) {
	w := newRelay(t, smtptest.Options{})
	m := w.mailer(w.relay())
	dialer := &countingDialer{}
	m.relay.cfg.Dialer = dialer
	var rcpts []string
	for d := range 20 {
		rcpts = append(rcpts, fmt.Sprintf("u@d%02d.test", d))
	}
	if _, err := send(t, m, "a@sender.test", rcpts, testBody); err != nil {
		t.Fatal(err)
	}
	if n := dialer.peak.Load(); n > 2 || n < 1 {
		t.Errorf("%d sessions open at once to the relay, want at most 2", n)
	}
	if n := len(w.s.Messages()); n != 20 {
		t.Errorf("%d messages", n)
	}
}

// The receiving server records exactly one message per Send, holding the
// canonical body, whatever line-ending tricks the body plays (SMTP
// smuggling, CVE-2023-51764/51765/51766).
func TestSendSmuggling(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{})
	const smuggled = "MAIL FROM:<evil@dest.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nowned\r\n.\r\n"
	tricks := map[string]string{
		`\n.\n`:     "\n.\n",
		`\n.\r\n`:   "\n.\r\n",
		`\r\n.\n`:   "\r\n.\n",
		`\r.\r\n`:   "\r.\r\n",
		`\r\n.\r`:   "\r\n.\r",
		`\r\r\n`:    "\r\r\n",
		`\r\n.\r\n`: "\r\n.\r\n",
	}
	for name, trick := range tricks {
		before := len(s.Messages())
		body := "Subject: test\r\n\r\nbefore" + trick + smuggled + "after\r\n"
		if _, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, body); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		msgs := s.Messages()[before:]
		if len(msgs) != 1 {
			t.Fatalf("%s: the server recorded %d messages for one Send", name, len(msgs))
		}
		got := msgs[0].Data
		if bytes.Contains(bytes.ReplaceAll(got, []byte("\r\n"), nil), []byte("\r")) || bytes.Contains(bytes.ReplaceAll(got, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("%s: a bare CR or LF arrived: %q", name, got)
		}
		if !bytes.Contains(got, []byte("MAIL FROM:<evil@dest.test>")) || !bytes.HasSuffix(got, []byte("after\r\n")) {
			t.Errorf("%s: the smuggled text is not plain body text: %q", name, got)
		}
		if msgs[0].From != "a@sender.test" || len(msgs[0].Rcpts) != 1 || msgs[0].Rcpts[0] != "b@dest.test" {
			t.Errorf("%s: envelope %q %v", name, msgs[0].From, msgs[0].Rcpts)
		}
	}
}

func TestSendRefusesBadBodies(t *testing.T) {
	w := newDirectWorld(t)
	s := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{MaxMessageSize: 1 << 20})
	for name, body := range map[string]string{
		"NUL":            "Subject: x\r\n\r\nnul\x00here\r\n",
		"long line":      "Subject: x\r\n\r\n" + strings.Repeat("a", 999) + "\r\n",
		"empty":          "",
		"over the limit": strings.Repeat(strings.Repeat("b", 70)+"\r\n", (1<<20)/72+1),
	} {
		res, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, body)
		var se *SendError
		if !errors.As(err, &se) || len(se.Failed) != 1 {
			t.Errorf("%s: %v, want a SendError with the recipient Failed", name, err)
		}
		if res == nil || len(res.Recipients) != 1 || res.Recipients[0].Status != Failed || !IsPermanent(res.Recipients[0].Err) {
			t.Errorf("%s: result %+v, want the recipient Failed for good", name, res)
		}
	}
	if s.Connections() != 0 {
		t.Errorf("%d connections for refused bodies", s.Connections())
	}
}

func TestSendLogsEachAttempt(t *testing.T) {
	w := newDirectWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: rejectPrefix})
	w.dns.MX("dest.test", "mx.dest.test")
	var buf bytes.Buffer
	m := w.mailer(Config{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	send(t, m, "a@sender.test", []string{"b@dest.test", "reject@dest.test"}, testBody)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d log lines for one attempt:\n%s", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"domain": "dest.test", "via": "direct", "host": "mx.dest.test", "recipients": 2.0, "delivered": 1.0} {
		if rec[k] != want {
			t.Errorf("log field %s = %v, want %v (%s)", k, rec[k], want, lines[0])
		}
	}
	if _, ok := rec["duration"]; !ok {
		t.Error("no duration")
	}
}
