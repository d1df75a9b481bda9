package peertest

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Files as maddy v0.8.1 stored them for this peer setup (taken from real
// submissions over STARTTLS).
const (
	// Two recipients, no Date in the message: maddy added one.
	maddyDateAdded = "Delivered-To: catchall\r\n" +
		"Return-Path: <a@sender.test>\r\n" +
		"X-Envelope-From: <a@sender.test>\r\n" +
		"X-Envelope-To: friend@gmail.com,boss@gws.test\r\n" +
		"Received: by mx.example.org (envelope-sender <a@sender.test>) with ESMTPS id\r\n" +
		" 89c57049; Sat, 28 Nov 2026 03:06:17 +0000\r\n" +
		"Date: Sat, 28 Nov 2026 03:06:17 +0000\r\n" +
		maddyClientMsg
	maddyClientMsg = "From: a@sender.test\r\n" +
		"To: b@example.org\r\n" +
		"Subject: t1\r\n" +
		"Message-ID: <m1@x>\r\n" +
		"\r\n" +
		"Hello.\r\n" +
		"..dot\r\n" +
		"last\r\n"

	// The null sender, and a Date of the client's in maddy's format but
	// minutes before the Received field: kept.
	maddyNullSender = "Delivered-To: catchall\r\n" +
		"Return-Path: <>\r\n" +
		"X-Envelope-From: <>\r\n" +
		"X-Envelope-To: x@y.test\r\n" +
		"Received: by mx.example.org with ESMTPS id a342696f; Sat, 28 Nov 2026\r\n" +
		" 03:06:17 +0000\r\n" +
		"Date: Sat, 28 Nov 2026 02:48:08 +0000\r\n" +
		"From: a@sender.test\r\n" +
		"Subject: t2\r\n" +
		"Message-ID: <m2@x>\r\n" +
		"\r\n" +
		"Hello.\r\n"

	// Neither Date nor Message-ID: maddy added both.
	maddyBothAdded = "Delivered-To: catchall\r\n" +
		"Return-Path: <a@sender.test>\r\n" +
		"X-Envelope-From: <a@sender.test>\r\n" +
		"X-Envelope-To: x@y.test\r\n" +
		"Received: by mx.example.org (envelope-sender <a@sender.test>) with ESMTPS id\r\n" +
		" 0919ae3f; Sat, 28 Nov 2026 03:06:17 +0000\r\n" +
		"Date: Sat, 28 Nov 2026 03:06:17 +0000\r\n" +
		"Message-Id: <6528334b-10a5-410f-9677-d662ff23a1ce@mx.example.org>\r\n" +
		"From: a@sender.test\r\n" +
		"Subject: t3\r\n" +
		"\r\n" +
		"no ids\r\n"
)

// trace is the part of a file maddy prepended, up to and with Received.
func trace(file string) string {
	i := strings.Index(file, " +0000\r\n")
	return file[:i+len(" +0000\r\n")]
}

func TestParseMaddyMail(t *testing.T) {
	tests := []struct {
		name           string
		raw            string
		from, rp       string
		to             []string
		received       string // a substring; "" for none
		added          []string
		msg, sent      string
		subject, msgID string
	}{
		{
			name: "Date added",
			raw:  maddyDateAdded,
			from: "a@sender.test", rp: "a@sender.test", to: []string{"friend@gmail.com", "boss@gws.test"},
			received: "by mx.example.org (envelope-sender <a@sender.test>) with ESMTPS id 89c57049; Sat, 28 Nov 2026 03:06:17 +0000",
			added:    []string{"Date"},
			msg:      "Date: Sat, 28 Nov 2026 03:06:17 +0000\r\n" + maddyClientMsg,
			sent:     maddyClientMsg,
			subject:  "t1", msgID: "<m1@x>",
		},
		{
			name: "null sender, the client's Date kept",
			raw:  maddyNullSender,
			to:   []string{"x@y.test"}, received: "with ESMTPS id a342696f",
			msg:     maddyNullSender[len(trace(maddyNullSender)):],
			sent:    maddyNullSender[len(trace(maddyNullSender)):],
			subject: "t2", msgID: "<m2@x>",
		},
		{
			name: "Date and Message-Id added",
			raw:  maddyBothAdded,
			from: "a@sender.test", rp: "a@sender.test", to: []string{"x@y.test"}, received: "0919ae3f",
			added:   []string{"Date", "Message-Id"},
			msg:     maddyBothAdded[len(trace(maddyBothAdded)):],
			sent:    "From: a@sender.test\r\nSubject: t3\r\n\r\nno ids\r\n",
			subject: "t3", msgID: "<6528334b-10a5-410f-9677-d662ff23a1ce@mx.example.org>",
		},
		{
			name: "Received in another time zone",
			raw: "X-Envelope-From: <s@x.test>\r\nX-Envelope-To: r@y.test\r\n" +
				"Received: by mx.example.org (envelope-sender <s@x.test>) with ESMTPS id 1; Sat, 28 Nov 2026 04:06:18 +0100\r\n" +
				"Date: Sat, 28 Nov 2026 03:06:17 +0000\r\nFrom: s@x.test\r\n\r\nb\r\n",
			from: "s@x.test", to: []string{"r@y.test"}, received: "+0100",
			added: []string{"Date"},
			msg:   "Date: Sat, 28 Nov 2026 03:06:17 +0000\r\nFrom: s@x.test\r\n\r\nb\r\n",
			sent:  "From: s@x.test\r\n\r\nb\r\n",
		},
		{
			name: "fields of the client's that only look like maddy's are kept",
			raw: "X-Envelope-From: <s@x.test>\r\nX-Envelope-To: r@y.test\r\n" +
				"Received: by mx.example.org with ESMTPS id 1; Sat, 28 Nov 2026 03:06:17 +0000\r\n" +
				// Not maddy's spelling of the names, or not its value.
				"DATE: Sat, 28 Nov 2026 03:06:17 +0000\r\n" +
				"Message-ID: <6528334b-10a5-410f-9677-d662ff23a1ce@mx.example.org>\r\n" +
				"Message-Id: <abc@mx.example.org>\r\n\r\nb\r\n",
			from: "s@x.test", to: []string{"r@y.test"}, received: "id 1",
			msg: "DATE: Sat, 28 Nov 2026 03:06:17 +0000\r\nMessage-ID: <6528334b-10a5-410f-9677-d662ff23a1ce@mx.example.org>\r\n" +
				"Message-Id: <abc@mx.example.org>\r\n\r\nb\r\n",
			sent: "DATE: Sat, 28 Nov 2026 03:06:17 +0000\r\nMessage-ID: <6528334b-10a5-410f-9677-d662ff23a1ce@mx.example.org>\r\n" +
				"Message-Id: <abc@mx.example.org>\r\n\r\nb\r\n",
			msgID: "<6528334b-10a5-410f-9677-d662ff23a1ce@mx.example.org>",
		},
		{
			name:    "not written by this peer: nothing stripped",
			raw:     "Received: by mx.example.org with ESMTPS id 1; Sat, 28 Nov 2026 03:06:17 +0000\r\nDate: Sat, 28 Nov 2026 03:06:17 +0000\r\nSubject: s\r\n\r\nb\r\n",
			msg:     "Received: by mx.example.org with ESMTPS id 1; Sat, 28 Nov 2026 03:06:17 +0000\r\nDate: Sat, 28 Nov 2026 03:06:17 +0000\r\nSubject: s\r\n\r\nb\r\n",
			sent:    "Received: by mx.example.org with ESMTPS id 1; Sat, 28 Nov 2026 03:06:17 +0000\r\nDate: Sat, 28 Nov 2026 03:06:17 +0000\r\nSubject: s\r\n\r\nb\r\n",
			subject: "s",
		},
		{
			name: "message without header",
			raw:  "X-Envelope-From: <s@x.test>\r\nX-Envelope-To: r@y.test\r\nReceived: by h with ESMTPS id 1; Sat, 28 Nov 2026 03:06:17 +0000\r\n\r\nbody only\r\n",
			from: "s@x.test", to: []string{"r@y.test"}, received: "by h",
			msg: "\r\nbody only\r\n", sent: "\r\nbody only\r\n",
		},
		{name: "empty file"},
		{name: "being written", raw: "\x00\x00\x00\x00", msg: "\x00\x00\x00\x00", sent: "\x00\x00\x00\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ParseMaddyMail("/store/key", []byte(tt.raw))
			if m.From != tt.from || m.ReturnPath != tt.rp || !slices.Equal(m.To, tt.to) {
				t.Errorf("envelope = from %q, Return-Path %q, to %q; want %q, %q, %q", m.From, m.ReturnPath, m.To, tt.from, tt.rp, tt.to)
			}
			if (tt.received == "") != (m.Received == "") || !strings.Contains(m.Received, tt.received) {
				t.Errorf("Received = %q, want it to contain %q", m.Received, tt.received)
			}
			if !slices.Equal(m.Added, tt.added) {
				t.Errorf("Added = %q, want %q", m.Added, tt.added)
			}
			if got := string(m.Message()); got != tt.msg {
				t.Errorf("Message() =\n%q\nwant\n%q", got, tt.msg)
			}
			if got := string(m.Sent()); got != tt.sent {
				t.Errorf("Sent() =\n%q\nwant\n%q", got, tt.sent)
			}
			if got := m.Header("subject"); got != tt.subject {
				t.Errorf("Header(subject) = %q, want %q", got, tt.subject)
			}
			if got := m.Header("Message-Id"); got != tt.msgID {
				t.Errorf("Header(Message-Id) = %q, want %q", got, tt.msgID)
			}
		})
	}
}

func TestMaddyPredicates(t *testing.T) {
	m := ParseMaddyMail("p", []byte(maddyDateAdded))
	if !MaddyTo("Boss@GWS.test")(m) || !m.HasRcpt("friend@gmail.com") || MaddyTo("b@example.org")(m) {
		t.Error("MaddyTo is wrong")
	}
	if !MaddyHeaderIs("message-id", "<m1@x>")(m) || MaddyHeaderIs("Message-ID", "<other>")(m) {
		t.Error("MaddyHeaderIs is wrong")
	}
}

func writeFile(t *testing.T, path, content string, mod time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func TestReadMaddyStore(t *testing.T) {
	dir := t.TempDir()
	if mails, err := ReadMaddyStore(filepath.Join(dir, "missing")); err != nil || len(mails) != 0 {
		t.Fatalf("missing store: %v, %v; want no mail, no error", mails, err)
	}
	t0 := time.Now().Add(-time.Hour)
	writeFile(t, filepath.Join(dir, "ffff0000"), maddyBothAdded, t0.Add(3*time.Second))
	writeFile(t, filepath.Join(dir, "aaaa0000"), maddyNullSender, t0.Add(2*time.Second))
	writeFile(t, filepath.Join(dir, "cccc0000"), maddyDateAdded, t0.Add(1*time.Second))
	writeFile(t, filepath.Join(dir, ".hidden"), "x", t0)
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	mails, err := ReadMaddyStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range mails {
		got = append(got, filepath.Base(m.Path)+" "+m.Header("Subject"))
	}
	if want := []string{"cccc0000 t1", "aaaa0000 t2", "ffff0000 t3"}; !slices.Equal(got, want) {
		t.Fatalf("ReadMaddyStore = %q, want %q", got, want)
	}
}

func TestWaitMaddy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0123abcd")
	// As maddy writes: the file extended to its size with NULs, then
	// written. (No t.Fatal in the goroutine; WaitMaddy times out.)
	if err := os.WriteFile(path, make([]byte, len(maddyDateAdded)), 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(150 * time.Millisecond)
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		f.WriteAt([]byte(maddyDateAdded), 0)
		f.Close()
	}()
	// nil matches anything, but not a file still being written.
	m := Env{}.WaitMaddy(t, dir, nil, 5*time.Second)
	if !bytes.Equal(m.Sent(), []byte(maddyClientMsg)) {
		t.Fatalf("got a file being written: %q", m.Raw)
	}
	if m := (Env{}).WaitMaddy(t, dir, MaddyTo("boss@gws.test"), time.Second); m.Header("Subject") != "t1" {
		t.Fatalf("got %+v", m)
	}
}

func TestWaitMaddyTimeout(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "0a"), maddyNullSender, time.Now().Add(-time.Minute))
	writeFile(t, filepath.Join(dir, "0b"), "\x00\x00\x00", time.Now())
	start := time.Now()
	_, err := waitMaddy(dir, MaddyTo("mine@example.org"), 150*time.Millisecond)
	if err == nil {
		t.Fatal("no error")
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Errorf("gave up after %v", d)
	}
	for _, want := range []string{"no matching mail", "2 message(s)", "to=[x@y.test]", `"t2"`, "0b", "still being written"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// A file with NULs that nobody touched for a while counts as complete.
	writeFile(t, filepath.Join(dir, "0b"), "\x00\x00\x00", time.Now().Add(-time.Minute))
	if _, err := waitMaddy(dir, func(m *MaddyMail) bool { return strings.HasSuffix(m.Path, "0b") }, 100*time.Millisecond); err != nil {
		t.Errorf("old file with NULs: %v", err)
	}
}
