package smtptest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestRecordsMessageByteForByte(t *testing.T) {
	s := Start(t, Options{})
	c := dialRaw(t, s.Addr)
	c.cmd(250, "EHLO client.test")
	c.cmd(250, "MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME")
	c.cmd(250, "RCPT TO:<bob@example.com>")
	c.cmd(250, "RCPT TO:<carol@example.com>")
	c.cmd(354, "DATA")
	// Dot-stuffed lines, a bare LF, a bare CR, NUL and 8-bit bytes: the
	// recorded Data must show exactly what the client meant after
	// unstuffing, with nothing canonicalized.
	c.write("Subject: hi\r\n\r\n..leading dot\r\nbare\nlf\r\nbare\rcr\r\nnul\x00 \xc3\xa9\r\n.\r\n")
	c.reply(250, "final dot")
	c.cmd(221, "QUIT")

	msgs := s.WaitMessages(t, 1, 5*time.Second)
	m := msgs[0]
	want := "Subject: hi\r\n\r\n.leading dot\r\nbare\nlf\r\nbare\rcr\r\nnul\x00 \xc3\xa9\r\n"
	if string(m.Data) != want {
		t.Errorf("Data = %q\nwant   %q", m.Data, want)
	}
	if m.From != "alice@example.org" || strings.Join(m.Rcpts, ",") != "bob@example.com,carol@example.com" {
		t.Errorf("envelope = %q %q", m.From, m.Rcpts)
	}
	if m.MailOpts == nil || m.MailOpts.Size != 100 || m.MailOpts.Body != smtp.Body8BitMIME {
		t.Errorf("MailOpts = %+v", m.MailOpts)
	}
	if len(m.RcptOpts) != 2 {
		t.Errorf("RcptOpts = %v", m.RcptOpts)
	}
	if m.Helo != "client.test" || m.TLS || m.AuthUser != "" || m.Conn != 1 || m.Code != 250 {
		t.Errorf("Helo %q TLS %v AuthUser %q Conn %d Code %d", m.Helo, m.TLS, m.AuthUser, m.Conn, m.Code)
	}
	if n := s.Connections(); n != 1 {
		t.Errorf("Connections = %d", n)
	}
}

// TestChunking records a message sent with BDAT (RFC 3030), which go-smtp
// always offers, in two chunks.
func TestChunking(t *testing.T) {
	s := Start(t, Options{})
	c := dialRaw(t, s.Addr)
	c.cmd(250, "EHLO client.test")
	c.cmd(250, "MAIL FROM:<a@example.org>")
	c.cmd(250, "RCPT TO:<b@example.com>")
	c.write("BDAT 7\r\nHello, ")
	c.reply(250, "BDAT 7")
	c.write("BDAT 8 LAST\r\n.world\r\n")
	c.reply(250, "BDAT 8 LAST")
	// BDAT carries bytes as they are: no dot-unstuffing.
	if m := s.WaitMessages(t, 1, 5*time.Second)[0]; string(m.Data) != "Hello, .world\r\n" {
		t.Fatalf("Data = %q", m.Data)
	}
}

func TestNullSender(t *testing.T) {
	s := Start(t, Options{})
	c := dial(t, s.Addr)
	if err := send(c, "", []string{"bob@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitMessages(t, 1, 5*time.Second)[0]; m.From != "" {
		t.Errorf("From = %q, want the null sender", m.From)
	}
}

func TestMessagesAreCopies(t *testing.T) {
	s := Start(t, Options{})
	if err := send(dial(t, s.Addr), "a@example.org", []string{"b@example.com"}, "body\r\n"); err != nil {
		t.Fatal(err)
	}
	m := s.WaitMessages(t, 1, 5*time.Second)[0]
	m.Data[0] = 'X'
	m.Rcpts[0] = "changed"
	m.MailOpts.Size = 42
	if again := s.Messages()[0]; string(again.Data) != "body\r\n" || again.Rcpts[0] != "b@example.com" || again.MailOpts.Size == 42 {
		t.Fatalf("modifying a returned message changed the record: %+v", again)
	}
}

func TestTransactionsOnOneConnection(t *testing.T) {
	s := Start(t, Options{})
	c := dial(t, s.Addr)
	for i := range 3 {
		if err := send(c, "a@example.org", []string{fmt.Sprintf("r%d@example.com", i)}, fmt.Sprintf("m%d\r\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	// An aborted transaction leaves nothing behind.
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("lost@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	msgs := s.WaitMessages(t, 3, 5*time.Second)
	for i, m := range msgs {
		if string(m.Data) != fmt.Sprintf("m%d\r\n", i) || len(m.Rcpts) != 1 || m.Rcpts[0] != fmt.Sprintf("r%d@example.com", i) || m.Conn != 1 {
			t.Errorf("message %d = %q to %q on conn %d", i, m.Data, m.Rcpts, m.Conn)
		}
	}
	if len(msgs) != 3 || s.Connections() != 1 {
		t.Errorf("%d messages on %d connections, want 3 on 1", len(msgs), s.Connections())
	}
}

func TestMaxRecipients(t *testing.T) {
	s := Start(t, Options{MaxRecipients: 2})
	c := dial(t, s.Addr)
	if ok, arg := c.Extension("LIMITS"); !ok || arg != "RCPTMAX=2" {
		t.Errorf("LIMITS = %v %q", ok, arg)
	}
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	for _, rcpt := range []string{"1@example.com", "2@example.com"} {
		if err := c.Rcpt(rcpt, nil); err != nil {
			t.Fatal(err)
		}
	}
	se := wantCode(t, c.Rcpt("3@example.com", nil), 452)
	if se.EnhancedCode != (smtp.EnhancedCode{4, 5, 3}) {
		t.Errorf("enhanced code %v, want 4.5.3", se.EnhancedCode)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitMessages(t, 1, 5*time.Second)[0]; len(m.Rcpts) != 2 {
		t.Errorf("Rcpts = %q, want the two accepted", m.Rcpts)
	}
}

func TestMaxMessageBytes(t *testing.T) {
	s := Start(t, Options{MaxMessageBytes: 100})
	c := dial(t, s.Addr)
	if size, ok := c.MaxMessageSize(); !ok || size != 100 {
		t.Errorf("advertised SIZE = %d %v, want 100", size, ok)
	}

	// Announced too big: refused at MAIL.
	wantCode(t, c.Mail("a@example.org", &smtp.MailOptions{Size: 101}), 552)

	// Not announced, sent too big: refused after the final dot.
	big := strings.Repeat("0123456789abcdefghi\r\n", 10) // 210 bytes
	wantCode(t, send(c, "a@example.org", []string{"b@example.com"}, big), 552)

	// The connection is still usable, and a small message passes.
	if err := send(c, "a@example.org", []string{"b@example.com"}, "small\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs := s.WaitMessages(t, 1, 5*time.Second)
	if len(msgs) != 1 || string(msgs[0].Data) != "small\r\n" {
		t.Fatalf("Messages = %v", msgs)
	}
	att := s.Attempts()
	if len(att) != 2 || att[0].Code != 552 || att[1].Code != 250 {
		t.Fatalf("Attempts = %+v", att)
	}
	if len(att[0].Data) != 100 {
		t.Errorf("the refused message was recorded with %d bytes, want the first 100", len(att[0].Data))
	}
}

// TestMaxMessageBytesBoundary pins go-smtp's behaviour at the limit: a body of
// exactly MaxMessageBytes is refused (its reader runs out before it sees the
// terminating dot), one byte less is accepted.
func TestMaxMessageBytesBoundary(t *testing.T) {
	s := Start(t, Options{MaxMessageBytes: 10})
	c := dial(t, s.Addr)
	if err := send(c, "a@example.org", []string{"b@example.com"}, "12345678\r\n"[1:]); err != nil {
		t.Fatalf("9 bytes: %v", err)
	}
	wantCode(t, send(c, "a@example.org", []string{"b@example.com"}, "12345678\r\n"), 552)
}

func TestPolicies(t *testing.T) {
	s := Start(t, Options{
		MailPolicy: func(from string) *smtp.SMTPError {
			if strings.HasPrefix(from, "spammer@") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "go away"}
			}
			return nil
		},
		RcptPolicy: func(rcpt string) *smtp.SMTPError {
			switch {
			case strings.HasPrefix(rcpt, "reject"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			case strings.HasPrefix(rcpt, "tempfail"):
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "try later"}
			}
			return nil
		},
		DataPolicy: func(m *Message) *smtp.SMTPError {
			if strings.Contains(string(m.Data), "virus") {
				return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "infected"}
			}
			return nil
		},
	})
	c := dial(t, s.Addr)
	se := wantCode(t, c.Mail("spammer@example.org", nil), 550)
	if se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) || se.Message != "go away" {
		t.Errorf("MAIL reply %v %q", se.EnhancedCode, se.Message)
	}
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.Rcpt("reject1@example.com", nil), 550)
	wantCode(t, c.Rcpt("tempfail1@example.com", nil), 450)
	if err := c.Rcpt("ok@example.com", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("virus\r\n"))
	wantCode(t, w.Close(), 554)
	if err := send(c, "a@example.org", []string{"ok@example.com"}, "clean\r\n"); err != nil {
		t.Fatal(err)
	}

	msgs := s.WaitMessages(t, 1, 5*time.Second)
	if len(msgs) != 1 || string(msgs[0].Data) != "clean\r\n" {
		t.Fatalf("Messages = %+v", msgs)
	}
	att := s.Attempts()
	if len(att) != 2 || att[0].Code != 554 || strings.Join(att[0].Rcpts, ",") != "ok@example.com" {
		t.Fatalf("Attempts = %+v", att)
	}
}

func TestSMTPUTF8(t *testing.T) {
	s := Start(t, Options{EnableSMTPUTF8: true})
	c := dial(t, s.Addr)
	if ok, _ := c.Extension("SMTPUTF8"); !ok {
		t.Fatal("SMTPUTF8 not advertised")
	}
	if err := c.Mail("jösé@例え.jp", &smtp.MailOptions{UTF8: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@example.com", nil); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	w.Write([]byte("x\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m := s.WaitMessages(t, 1, 5*time.Second)[0]
	if !m.MailOpts.UTF8 || m.From != "jösé@例え.jp" {
		t.Errorf("From %q UTF8 %v", m.From, m.MailOpts.UTF8)
	}

	// Without the option the parameter is refused.
	plain := Start(t, Options{})
	r := dialRaw(t, plain.Addr)
	r.cmd(250, "EHLO client.test")
	r.cmd(504, "MAIL FROM:<a@example.org> SMTPUTF8")
}

func TestDisableExtensions(t *testing.T) {
	s := Start(t, Options{DisablePipelining: true, Disable8BitMIME: true})
	c := dial(t, s.Addr)
	for _, ext := range []string{"PIPELINING", "8BITMIME"} {
		if ok, _ := c.Extension(ext); ok {
			t.Errorf("%s advertised", ext)
		}
	}
	for _, ext := range []string{"ENHANCEDSTATUSCODES", "SIZE"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not advertised", ext)
		}
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	// go-smtp's client drops BODY= when 8BITMIME is not offered, so say it
	// by hand.
	r := dialRaw(t, s.Addr)
	r.cmd(250, "EHLO client.test")
	r.cmd(555, "MAIL FROM:<a@example.org> BODY=8BITMIME")
	r.cmd(250, "MAIL FROM:<a@example.org> BODY=7BIT")

	// By default go-smtp advertises both.
	d := dial(t, Start(t, Options{}).Addr)
	for _, ext := range []string{"PIPELINING", "8BITMIME"} {
		if ok, _ := d.Extension(ext); !ok {
			t.Errorf("%s not advertised by default", ext)
		}
	}
}

func TestInconsistentOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"ImplicitTLS without TLS":      {ImplicitTLS: true},
		"DisablePipelining with TLS":   {DisablePipelining: true, BrokenTLS: true},
		"Disable8BitMIME with TLS":     {Disable8BitMIME: true, BrokenTLS: true},
		"listen on an invalid address": {Listen: "127.0.0.1:99999"},
	} {
		if s, err := newServer(t, opts); err == nil {
			s.Close()
			t.Errorf("%s: no error", name)
		}
	}
}

func TestConcurrentClients(t *testing.T) {
	s := Start(t, Options{})
	const clients, each = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			c, err := smtp.Dial(s.Addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := range each {
				if err := send(c, "a@example.org", []string{fmt.Sprintf("c%d-%d@example.com", i, j)}, "x\r\n"); err != nil {
					errs <- err
					return
				}
			}
			c.Quit()
		})
	}
	// Readers run concurrently with the writers, for the race detector.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			s.Messages()
			s.Transcript()
			s.Connections()
		}
	}()
	wg.Wait()
	<-done
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	msgs := s.WaitMessages(t, clients*each, 5*time.Second)
	seen := map[int]int{}
	for _, m := range msgs {
		seen[m.Conn]++
	}
	if len(msgs) != clients*each || s.Connections() != clients || len(seen) != clients {
		t.Fatalf("%d messages on %d connections (by index: %v)", len(msgs), s.Connections(), seen)
	}
}

func TestWaitMessagesFailsWithAReport(t *testing.T) {
	s := Start(t, Options{})
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.WaitMessages(ft, 1, 50*time.Millisecond)
	}()
	<-done
	if !strings.Contains(ft.msg, "0 message(s) accepted") {
		t.Fatalf("WaitMessages reported %q", ft.msg)
	}
}

// fatalRecorder captures a Fatalf and ends the goroutine like testing does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestIPv6(t *testing.T) {
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("IPv6 loopback [::1] is not available here: %v", err)
	} else {
		ln.Close()
	}
	s := Start(t, Options{Listen: "[::1]:0"})
	if s.Host() != "::1" || s.Port() == 0 {
		t.Fatalf("Addr %q: host %q port %d", s.Addr, s.Host(), s.Port())
	}
	if err := send(dial(t, s.Addr), "a@example.org", []string{"b@example.com"}, "v6\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitMessages(t, 1, 5*time.Second)[0]; string(m.Data) != "v6\r\n" {
		t.Fatalf("Data = %q", m.Data)
	}
}

func TestHostPort(t *testing.T) {
	s := Start(t, Options{})
	if s.Host() != "127.0.0.1" || net.JoinHostPort(s.Host(), fmt.Sprint(s.Port())) != s.Addr {
		t.Fatalf("Addr %q, Host %q, Port %d", s.Addr, s.Host(), s.Port())
	}
}

func TestTranscript(t *testing.T) {
	s := Start(t, Options{})
	r := dialRaw(t, s.Addr)
	r.cmd(250, "EHLO one.test")
	r.cmd(221, "QUIT")
	if err := send(dial(t, s.Addr), "a@example.org", []string{"b@example.com"}, "Body line\r\n"); err != nil {
		t.Fatal(err)
	}
	s.WaitMessages(t, 1, 5*time.Second)

	first := "EHLO one.test\r\nQUIT\r\n"
	if got := string(s.ConnTranscript(1)); got != first {
		t.Errorf("ConnTranscript(1) = %q, want %q", got, first)
	}
	second := s.ConnTranscript(2)
	for _, want := range []string{"EHLO client.test\r\n", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>\r\n", "DATA\r\n", "Body line\r\n.\r\n"} {
		if !containsFold(second, want) {
			t.Errorf("ConnTranscript(2) = %q lacks %q", second, want)
		}
	}
	if got := string(s.Transcript()); !strings.HasPrefix(got, first) || !strings.HasSuffix(got, string(second)) {
		t.Errorf("Transcript is not the connections in order: %q", got)
	}
	if s.ConnTranscript(0) != nil || s.ConnTranscript(3) != nil {
		t.Error("ConnTranscript of a connection that does not exist is not nil")
	}
}

func TestCloseIsIdempotentAndStopsListening(t *testing.T) {
	s := Start(t, Options{})
	idle := dialRaw(t, s.Addr) // an open session Close must end
	s.Close()
	s.Close()
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting after Close")
	}
	idle.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle session still open after Close: %v", err)
	}
}
