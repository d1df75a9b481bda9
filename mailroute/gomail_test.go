package mailroute

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	netmail "net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wneessen/go-mail"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// gomailMailer is a Mailer of w with the relay configured as Smarthost
// (SendMsg, like Send, uses only that one).
func (w *dropinWorld) gomailMailer() *Mailer {
	w.t.Helper()
	m, err := New(Config{
		Hostname: "mail.sender.test",
		Resolver: DNSServer(w.dns.Addr),
		Direct:   DirectOptions{Port: w.port},
		Relay: &Relay{
			Addr:      w.relay.Addr,
			Username:  relayUser,
			Password:  relayPass,
			TLSConfig: &tls.Config{RootCAs: w.ca.Pool()},
		},
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { m.Close() })
	return m
}

// newMsg builds a go-mail message, failing the test on a bad address.
func newMsg(t *testing.T, from, subject string, to, cc, bcc []string) *mail.Msg {
	t.Helper()
	msg := mail.NewMsg()
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check(msg.From(from))
	if len(to) > 0 {
		check(msg.To(to...))
	}
	if len(cc) > 0 {
		check(msg.Cc(cc...))
	}
	if len(bcc) > 0 {
		check(msg.Bcc(bcc...))
	}
	msg.Subject(subject)
	msg.SetBodyString(mail.TypeTextPlain, "Hello from "+subject+".\n")
	return msg
}

func sendMsg(t *testing.T, m *Mailer, msgs ...*mail.Msg) (*Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return m.SendMsg(ctx, msgs...)
}

// rendered is what go-mail itself writes for msg (after a send it has its
// Date and Message-ID, so it writes the same bytes again).
func rendered(t *testing.T, msg *mail.Msg) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := msg.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// headerHasBcc reports whether a message's header section has a Bcc field.
func headerHasBcc(data []byte) bool {
	header, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	for line := range bytes.Lines(header) {
		if isBccField(line) {
			return true
		}
	}
	return false
}

// To, Cc and Bcc all get the message, each by its route; the envelope
// sender is the message's envelope-from; no Bcc header reaches anyone.
func TestSendMsgToCcBcc(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	m := w.gomailMailer()
	msg := newMsg(t, "Alice <alice@sender.test>", "to-cc-bcc",
		[]string{"Bob <bob@small.test>"}, []string{"carol@gmail.com"}, []string{"dave@small.test", "Erin <erin@gmail.com>"})
	if err := msg.EnvelopeFrom("bounces@sender.test"); err != nil {
		t.Fatal(err)
	}
	res, err := sendMsg(t, m, msg)
	if err != nil {
		t.Fatal(err)
	}
	var rcpts []string
	for _, r := range res.Recipients {
		rcpts = append(rcpts, r.Rcpt)
		if r.Status != Delivered {
			t.Errorf("%s: %v %v", r.Rcpt, r.Status, r.Err)
		}
	}
	if want := []string{"bob@small.test", "carol@gmail.com", "dave@small.test", "erin@gmail.com"}; !slices.Equal(rcpts, want) {
		t.Errorf("recipients %q, want %q", rcpts, want)
	}

	want := rendered(t, msg)
	if headerHasBcc(want) || bytes.Contains(want, []byte("dave@")) || bytes.Contains(want, []byte("erin@")) {
		t.Fatalf("go-mail wrote the Bcc recipients:\n%s", want)
	}
	for _, tt := range []struct {
		srv   *smtptest.Server
		rcpts []string
	}{
		{w.mx, []string{"bob@small.test", "dave@small.test"}},
		{w.relay, []string{"carol@gmail.com", "erin@gmail.com"}},
	} {
		msgs := tt.srv.Messages()
		if len(msgs) != 1 {
			t.Fatalf("%d messages, want 1", len(msgs))
		}
		got := msgs[0]
		if got.From != "bounces@sender.test" || !slices.Equal(got.Rcpts, tt.rcpts) {
			t.Errorf("envelope from %q to %q, want bounces@sender.test to %q", got.From, got.Rcpts, tt.rcpts)
		}
		if !bytes.Equal(got.Data, want) {
			t.Errorf("received\n%q\nwant\n%q", got.Data, want)
		}
		if !bytes.Contains(got.Data, []byte("\r\nCc: <carol@gmail.com>\r\n")) {
			t.Errorf("no Cc header in\n%s", got.Data)
		}
	}
}

// Without an envelope-from, the From address is the envelope sender.
func TestSendMsgSenderFromHeader(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	m := w.gomailMailer()
	if _, err := sendMsg(t, m, newMsg(t, "Alice <alice@sender.test>", "s", []string{"bob@small.test"}, nil, nil)); err != nil {
		t.Fatal(err)
	}
	if msgs := w.mx.Messages(); len(msgs) != 1 || msgs[0].From != "alice@sender.test" {
		t.Errorf("got %+v", msgs)
	}
}

// Several messages in one call: each sent with its own envelope, results
// concatenated in order.
func TestSendMsgTwoMessages(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	m := w.gomailMailer()
	first := newMsg(t, "alice@sender.test", "first", []string{"bob@small.test", "carol@gmail.com"}, nil, nil)
	second := newMsg(t, "zoe@sender.test", "second", []string{"yann@small.test"}, nil, []string{"xavi@small.test"})
	res, err := sendMsg(t, m, first, second)
	if err != nil {
		t.Fatal(err)
	}
	var rcpts []string
	for _, r := range res.Recipients {
		rcpts = append(rcpts, r.Rcpt)
	}
	if want := []string{"bob@small.test", "carol@gmail.com", "yann@small.test", "xavi@small.test"}; !slices.Equal(rcpts, want) {
		t.Errorf("recipients %q, want %q", rcpts, want)
	}
	direct := w.mx.Messages()
	if len(direct) != 2 {
		t.Fatalf("MX got %d messages, want 2", len(direct))
	}
	if d := direct[0]; d.From != "alice@sender.test" || !slices.Equal(d.Rcpts, []string{"bob@small.test"}) || !bytes.Equal(d.Data, rendered(t, first)) {
		t.Errorf("first: %q → %q\n%s", d.From, d.Rcpts, d.Data)
	}
	if d := direct[1]; d.From != "zoe@sender.test" || !slices.Equal(d.Rcpts, []string{"yann@small.test", "xavi@small.test"}) || !bytes.Equal(d.Data, rendered(t, second)) {
		t.Errorf("second: %q → %q\n%s", d.From, d.Rcpts, d.Data)
	}
	if r := w.relay.Messages(); len(r) != 1 || !slices.Equal(r[0].Rcpts, []string{"carol@gmail.com"}) {
		t.Errorf("relay got %+v", r)
	}
}

// A message that cannot be sent is reported by its place; the others go.
func TestSendMsgBadMessages(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	m := w.gomailMailer()
	noFrom := mail.NewMsg()
	if err := noFrom.To("bob@small.test"); err != nil {
		t.Fatal(err)
	}
	noRcpt := newMsg(t, "alice@sender.test", "nobody", nil, nil, nil)
	good := newMsg(t, "alice@sender.test", "good", []string{"bob@small.test"}, nil, nil)
	res, err := sendMsg(t, m, nil, noFrom, good, noRcpt)
	if err == nil {
		t.Fatal("no error")
	}
	for _, s := range []string{"message 1:", "message 2:", "message 4:"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	if strings.Contains(err.Error(), "message 3:") || !errors.Is(err, mail.ErrNoFromAddress) || !errors.Is(err, mail.ErrNoRcptAddresses) {
		t.Errorf("error %v", err)
	}
	if len(res.Recipients) != 1 || res.Recipients[0].Status != Delivered || len(w.mx.Messages()) != 1 {
		t.Errorf("result %+v; %d delivered", res.Recipients, len(w.mx.Messages()))
	}
}

// A Bcc field the message carries anyway (here a generic header) is
// removed on the way out.
func TestSendMsgRemovesBccHeaderField(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	m := w.gomailMailer()
	msg := newMsg(t, "alice@sender.test", "leak", []string{"bob@small.test"}, nil, nil)
	msg.SetGenHeader("Bcc", "leak@elsewhere.test")
	if !headerHasBcc(rendered(t, msg)) {
		t.Fatal("go-mail did not write the generic Bcc header; the test proves nothing")
	}
	if _, err := sendMsg(t, m, msg); err != nil {
		t.Fatal(err)
	}
	got := w.mx.Messages()
	if len(got) != 1 || headerHasBcc(got[0].Data) || bytes.Contains(got[0].Data, []byte("leak@")) {
		t.Errorf("received %+v", got)
	}
}

func TestBccFilter(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"Bcc: a@x\r\nTo: b@y\r\n\r\nBody\r\n", "To: b@y\r\n\r\nBody\r\n"},
		{"To: b@y\r\nbCC: a@x,\r\n c@x\r\n\td@x\r\nSubject: s\r\n\r\nBody\r\n", "To: b@y\r\nSubject: s\r\n\r\nBody\r\n"},
		{"BCC : obsolete@x\r\nTo: b@y\r\n\r\n", "To: b@y\r\n\r\n"},
		{"Bcc:\r\nTo: b@y\r\n\r\n", "To: b@y\r\n\r\n"},
		{"X-Bcc: kept\r\nBccx: kept\r\nTo: b@y\r\n\r\n", "X-Bcc: kept\r\nBccx: kept\r\nTo: b@y\r\n\r\n"},
		{"To: b@y\r\n\r\nBcc: in the body stays\r\n", "To: b@y\r\n\r\nBcc: in the body stays\r\n"},
		{"To: b@y\nBcc: a@x\n\nBody\n", "To: b@y\n\nBody\n"},
		{"To: b@y\r\nBcc: a@x", "To: b@y\r\n"},
		{"To: b@y", "To: b@y"},
	} {
		for _, chunk := range []int{1, 3, len(tt.in)} {
			var out bytes.Buffer
			f := &bccFilter{w: &out}
			for in := []byte(tt.in); len(in) > 0; {
				n := min(chunk, len(in))
				if k, err := f.Write(in[:n]); k != n || err != nil {
					t.Fatalf("Write = %d, %v", k, err)
				}
				in = in[n:]
			}
			if err := f.flush(); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want || f.n != int64(out.Len()) {
				t.Errorf("%q in chunks of %d: %q (n %d), want %q", tt.in, chunk, out.String(), f.n, tt.want)
			}
		}
	}
}

// msgSource also works as a plain io.Reader.
func TestMsgSourceRead(t *testing.T) {
	msg := newMsg(t, "alice@sender.test", "read", []string{"bob@small.test"}, nil, []string{"hidden@small.test"})
	got, err := io.ReadAll(&msgSource{msg: msg})
	if err != nil {
		t.Fatal(err)
	}
	if want := rendered(t, msg); !bytes.Equal(got, want) || headerHasBcc(got) {
		t.Errorf("read\n%q\nwant\n%q", got, want)
	}
}

// Addresses set on a go-mail message as net/mail.Address values are
// checked as written, as Send checks them: go-mail's formatting would
// quote them into other, valid mailboxes ("a b@c.com" → "\"a b\"@c.com")
// or drop a NUL. Each such message fails with Send's error and nothing is
// sent; the good one still goes.
func TestSendMsgRefusesWhatSendRefuses(t *testing.T) {
	w := newDropinWorld(t, smtptest.Options{})
	m := w.gomailMailer()
	bad := []string{"a b@small.test", "@evil.test:a@small.test", "a\x00b@small.test", "a@b@small.test"}
	var msgs []*mail.Msg
	for _, addr := range bad {
		rcpt := newMsg(t, "alice@sender.test", "bad rcpt", nil, nil, nil)
		rcpt.ToMailAddress(&netmail.Address{Address: addr})
		sender := newMsg(t, "alice@sender.test", "bad sender", []string{"bob@small.test"}, nil, nil)
		sender.EnvelopeFromMailAddress(&netmail.Address{Address: addr})
		msgs = append(msgs, rcpt, sender)
	}
	msgs = append(msgs, newMsg(t, "alice@sender.test", "good", []string{"bob@small.test"}, nil, nil))
	res, err := sendMsg(t, m, msgs...)
	for i, addr := range bad {
		_, sendErr := m.Send(context.Background(), "alice@sender.test", []string{addr}, strings.NewReader(testBody))
		if sendErr == nil {
			t.Fatalf("Send accepted %q", addr)
		}
		for k, what := range []string{"recipient", "sender"} {
			s := fmt.Sprintf("message %d: ", 2*i+k+1)
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s %q: no error for %s", what, addr, s)
			}
		}
		if !strings.Contains(err.Error(), strings.TrimPrefix(sendErr.Error(), "mailroute: recipient: ")) {
			t.Errorf("%q: SendMsg's error %q lacks Send's %q", addr, err, sendErr)
		}
	}
	// Every refused message reports its recipients Failed, nothing sent;
	// the good one, last, is delivered: one message reached the MX.
	n := len(res.Recipients)
	for i, r := range res.Recipients {
		if want := Failed; i == n-1 && r.Status != Delivered || i < n-1 && (r.Status != want || r.Err == nil) {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	if n != 2*len(bad)+1 || len(w.mx.Messages()) != 1 {
		t.Errorf("%d results; %d messages delivered", n, len(w.mx.Messages()))
	}
}
