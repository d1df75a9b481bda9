package peertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A file as Postfix 3.7's virtual(8) wrote it for this peer setup (taken
// from a real delivery over STARTTLS).
const postfixFile = "Return-Path: <a@sender.test>\n" +
	"X-Original-To: User2@Example.ORG\n" +
	"Delivered-To: User2@Example.ORG\n" +
	"Received: from client.test (unknown [127.0.0.1])\n" +
	"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n" +
	"\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n" +
	"\t(No client certificate requested)\n" +
	"\tby mx.example.org (Postfix) with ESMTPS id 87426985A56;\n" +
	"\tSat, 28 Nov 2026 02:48:08 +0000 (UTC)\n" +
	"Received: from elsewhere by relay.sender.test; Sat, 28 Nov 2026 02:48:07 +0000\n" +
	"From: a@sender.test\n" +
	"To: user@example.org\n" +
	"Message-ID: <probe-1@sender.test>\n" +
	"Subject: probe\n" +
	"\n" +
	"line1\n" +
	".dot line\n"

func TestParseMail(t *testing.T) {
	tests := []struct {
		name                   string
		raw                    string
		from, to, orig, msg    string
		wantSubject, wantMsgID string
	}{
		{
			name: "postfix delivery",
			raw:  postfixFile,
			from: "a@sender.test", to: "User2@Example.ORG", orig: "User2@Example.ORG",
			msg:         postfixFile[strings.Index(postfixFile, "Received: from elsewhere"):],
			wantSubject: "probe", wantMsgID: "<probe-1@sender.test>",
		},
		{
			name: "null sender, plain ESMTP, no Received of the sender",
			raw: "Return-Path: <>\nX-Original-To: bounce@example.org\nDelivered-To: bounce@example.org\n" +
				"Received: from client.test (unknown [127.0.0.1])\n\tby mx.example.org (Postfix) with ESMTP id 1A2B3C;\n\tSat, 28 Nov 2026 02:48:08 +0000 (UTC)\n" +
				"Subject: dsn\n\nbody\n",
			from: "", to: "bounce@example.org", orig: "bounce@example.org",
			msg:         "Subject: dsn\n\nbody\n",
			wantSubject: "dsn",
		},
		{
			name: "not written by Postfix: nothing stripped",
			raw:  "Received: from x by y (Postfix) with ESMTP id 1;\n\tdate\nSubject: s\n\nb\n",
			msg:  "Received: from x by y (Postfix) with ESMTP id 1;\n\tdate\nSubject: s\n\nb\n",
			// Subject is parsed from the unstripped message.
			wantSubject: "s",
		},
		{
			name: "prefix but a foreign Received is kept",
			raw:  "Return-Path: <s@x>\nDelivered-To: r@example.org\nReceived: by other.mta with SMTP;\n\tdate\n\nbody",
			from: "s@x", to: "r@example.org",
			msg: "Received: by other.mta with SMTP;\n\tdate\n\nbody",
		},
		{
			name: "message without header",
			raw:  "Return-Path: <s@x>\nX-Original-To: r@example.org\nDelivered-To: r@example.org\n\njust a body\n",
			from: "s@x", to: "r@example.org", orig: "r@example.org",
			msg: "\njust a body\n",
		},
		{
			name: "empty file",
			raw:  "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ParseMail("/x/new/1", []byte(tt.raw))
			if m.ReturnPath != tt.from || m.DeliveredTo != tt.to || m.OriginalTo != tt.orig {
				t.Errorf("envelope = (%q, %q, %q), want (%q, %q, %q)",
					m.ReturnPath, m.DeliveredTo, m.OriginalTo, tt.from, tt.to, tt.orig)
			}
			if got := string(m.Message()); got != tt.msg {
				t.Errorf("Message() =\n%q\nwant\n%q", got, tt.msg)
			}
			if got := string(m.Sent()); got != strings.ReplaceAll(tt.msg, "\n", "\r\n") {
				t.Errorf("Sent() = %q", got)
			}
			if got := m.Header("subject"); got != tt.wantSubject {
				t.Errorf("Header(subject) = %q, want %q", got, tt.wantSubject)
			}
			if got := m.Header("Message-Id"); got != tt.wantMsgID {
				t.Errorf("Header(Message-Id) = %q, want %q", got, tt.wantMsgID)
			}
		})
	}
}

func TestSentRoundTrip(t *testing.T) {
	sent := "From: a@sender.test\r\nTo: user@example.org\r\nSubject: x\r\n\r\n.leading dot\r\nbare\rcr\r\n\r\n"
	stored := "Return-Path: <a@sender.test>\nX-Original-To: user@example.org\nDelivered-To: user@example.org\n" +
		"Received: from c (unknown [127.0.0.1])\n\tby mx.example.org (Postfix) with ESMTP id 9;\n\tdate\n" +
		strings.ReplaceAll(sent, "\r\n", "\n")
	if got := string(ParseMail("p", []byte(stored)).Sent()); got != sent {
		t.Fatalf("Sent() = %q, want %q", got, sent)
	}
}

func TestPredicates(t *testing.T) {
	m := ParseMail("p", []byte(postfixFile))
	if !To("user2@example.org")(m) || To("user@example.org")(m) {
		t.Error("To is wrong")
	}
	if !HeaderIs("message-id", "<probe-1@sender.test>")(m) || HeaderIs("Message-ID", "<other>")(m) {
		t.Error("HeaderIs is wrong")
	}
}

func writeMail(t *testing.T, dir, sub, name, raw string, mod time.Time) {
	t.Helper()
	p := filepath.Join(dir, sub, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func mailFor(rcpt, subject string) string {
	return "Return-Path: <s@x.test>\nX-Original-To: " + rcpt + "\nDelivered-To: " + rcpt +
		"\nReceived: from c (unknown [127.0.0.1])\n\tby mx.example.org (Postfix) with ESMTP id 1;\n\tdate\n" +
		"Subject: " + subject + "\n\nbody\n"
}

func TestReadMaildir(t *testing.T) {
	dir := t.TempDir()
	if mails, err := ReadMaildir(filepath.Join(dir, "missing")); err != nil || len(mails) != 0 {
		t.Fatalf("missing Maildir: %v, %v; want no mail, no error", mails, err)
	}
	t0 := time.Now().Add(-time.Hour)
	writeMail(t, dir, "new", "300.V1I1M1.vm", mailFor("c@example.org", "third"), t0.Add(3*time.Second))
	writeMail(t, dir, "cur", "100.V1I2M1.vm:2,S", mailFor("a@example.org", "first"), t0.Add(1*time.Second))
	writeMail(t, dir, "new", "200.V1I3M1.vm", mailFor("b@example.org", "second"), t0.Add(2*time.Second))
	writeMail(t, dir, "tmp", "400.V1I4M1.vm", mailFor("d@example.org", "in progress"), t0.Add(4*time.Second))
	writeMail(t, dir, "new", ".hidden", "x", t0)
	if err := os.Mkdir(filepath.Join(dir, "new", "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}

	mails, err := ReadMaildir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range mails {
		got = append(got, m.DeliveredTo+" "+m.Header("Subject"))
	}
	want := []string{"a@example.org first", "b@example.org second", "c@example.org third"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("ReadMaildir = %q, want %q", got, want)
	}
	if filepath.Base(filepath.Dir(mails[0].Path)) != "cur" {
		t.Errorf("Path = %s, want it in cur/", mails[0].Path)
	}
}

func TestWaitMaildir(t *testing.T) {
	dir := t.TempDir()
	go func() {
		time.Sleep(100 * time.Millisecond)
		// Maildir delivery: write in tmp/, then rename into new/. (No
		// t.Fatal here: not the test's goroutine; WaitMaildir times out.)
		os.MkdirAll(filepath.Join(dir, "tmp"), 0o755)
		os.MkdirAll(filepath.Join(dir, "new"), 0o755)
		tmp := filepath.Join(dir, "tmp", "1.V1I1M1.vm")
		os.WriteFile(tmp, []byte(mailFor("late@example.org", "late")), 0o600)
		os.Rename(tmp, filepath.Join(dir, "new", "1.V1I1M1.vm"))
	}()
	m := Env{}.WaitMaildir(t, dir, To("late@example.org"), 5*time.Second)
	if m.Header("Subject") != "late" {
		t.Fatalf("got %+v", m)
	}
	if m := (Env{}).WaitMaildir(t, dir, nil, time.Second); m.DeliveredTo != "late@example.org" {
		t.Fatalf("nil predicate: got %+v", m)
	}
}

func TestWaitMaildirTimeout(t *testing.T) {
	dir := t.TempDir()
	writeMail(t, dir, "new", "1.V1I1M1.vm", mailFor("other@example.org", "not mine"), time.Now())
	start := time.Now()
	_, err := waitMaildir(dir, To("mine@example.org"), 150*time.Millisecond)
	if err == nil {
		t.Fatal("no error")
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Errorf("gave up after %v", d)
	}
	for _, want := range []string{"no matching mail", "1 message", "other@example.org", `"not mine"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
