package peertest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Mail is one message as Postfix's virtual(8) delivery agent stored it in a
// Maildir: one file per accepted recipient.
//
// What Postfix 3.7 (Debian 12) does to a message on the way, as configured
// by internal/peers/postfix.sh (checked against real deliveries):
//
//   - Line endings are LF in the file (SMTP's CRLF is converted); dot
//     stuffing is undone; a message whose last line has no line ending gets
//     one. Long lines (several KB) are kept whole.
//   - Four header fields are prepended, in this order:
//     "Return-Path: <sender>" (the MAIL FROM address, "<>" for the null
//     sender), "X-Original-To: rcpt" (the RCPT TO address as the client gave
//     it), "Delivered-To: rcpt" (the final recipient; the same here, since
//     nothing is aliased) and one "Received:" field, folded over several
//     lines: "from <helo> (unknown [client-ip])", then with STARTTLS or
//     implicit TLS "(using TLSv1.3 with cipher ...) (No client certificate
//     requested)", then "by mx.example.org (Postfix) with <proto> id
//     <queue-id>", then "for <rcpt>" when the transaction had a single
//     recipient, then "; <date>". <proto> is ESMTP, +S with TLS, +A after
//     AUTH (ESMTPS, ESMTPSA), and UTF8SMTP instead of ESMTP when the client
//     asked for SMTPUTF8 (net/smtp does whenever it is offered).
//   - Header fields named Return-Path, Bcc, Resent-Bcc and Content-Length
//     in the message itself are deleted (hard-wired in Postfix < 3.8; on
//     3.8 and later postfix.sh sets drop_headers empty to keep them).
//   - Nothing else: the peer is configured not to add Message-ID, Date,
//     From or To and not to rewrite addresses in headers.
//
// So for a message that has CRLF line endings, ends in CRLF and has none of
// the four dropped header fields, [Mail.Sent] equals the DATA the client sent
// (before dot stuffing), byte for byte.
type Mail struct {
	// Path is the file in the Maildir's new/ or cur/ directory.
	Path string
	// Raw is the file as stored: LF line endings, Postfix's header fields first.
	Raw []byte
	// ReturnPath is the envelope sender (MAIL FROM) from the Return-Path
	// field, without the angle brackets; "" for the null sender "<>" or when
	// the file has no Return-Path.
	ReturnPath string
	// DeliveredTo is the envelope recipient Postfix delivered to
	// (Delivered-To).
	DeliveredTo string
	// OriginalTo is the recipient as the client sent it in RCPT TO
	// (X-Original-To).
	OriginalTo string

	msgStart int // offset in Raw of the message without Postfix's fields
}

// Message returns the stored message without the header fields Postfix
// prepended (Return-Path, X-Original-To, Delivered-To and its own Received),
// with the LF line endings of the file.
func (m *Mail) Message() []byte { return m.Raw[m.msgStart:] }

// Sent returns [Mail.Message] with CRLF line endings: what the SMTP client
// sent as DATA, for byte-for-byte comparison (see [Mail] for what Postfix
// changes).
func (m *Mail) Sent() []byte {
	msg := m.Message()
	return bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
}

// Header returns the value of the first header field called name in
// [Mail.Message] (case-insensitive), or "" when there is none.
func (m *Mail) Header(name string) string {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Message()))
	if err != nil {
		return ""
	}
	return msg.Header.Get(name)
}

// To matches mail delivered to rcpt (Delivered-To, case-insensitive).
func To(rcpt string) func(*Mail) bool {
	return func(m *Mail) bool { return strings.EqualFold(m.DeliveredTo, rcpt) }
}

// HeaderIs matches mail whose message has the header field name with exactly
// value, e.g. HeaderIs("Message-ID", "<"+id+">").
func HeaderIs(name, value string) func(*Mail) bool {
	return func(m *Mail) bool { return m.Header(name) == value }
}

// ParseMail parses one stored message (see [Mail]).
func ParseMail(path string, raw []byte) *Mail {
	m := &Mail{Path: path, Raw: raw}
	off := 0
	// The fields virtual(8) prepends, in any order.
	for off < len(raw) {
		name, value, next := headerField(raw, off)
		switch {
		case strings.EqualFold(name, "Return-Path"):
			m.ReturnPath = strings.TrimSuffix(strings.TrimPrefix(value, "<"), ">")
		case strings.EqualFold(name, "X-Original-To"):
			m.OriginalTo = value
		case strings.EqualFold(name, "Delivered-To"):
			m.DeliveredTo = value
		default:
			next = -1
		}
		if next < 0 {
			break
		}
		off = next
	}
	// Then the Received field that Postfix's smtpd added (only when the
	// prefix above was there: a file not written by Postfix is left alone).
	if off > 0 {
		name, value, next := headerField(raw, off)
		if strings.EqualFold(name, "Received") && strings.Contains(value, "(Postfix) with ") {
			off = next
		}
	}
	m.msgStart = off
	return m
}

// headerField parses the (possibly folded) header field starting at off. It
// returns its name, its unfolded value trimmed of spaces and the offset after
// it; next is -1 when there is no header field at off.
func headerField(raw []byte, off int) (name, value string, next int) {
	end := off
	for {
		i := bytes.IndexByte(raw[end:], '\n')
		if i < 0 {
			return "", "", -1 // an unterminated line ends no header
		}
		end += i + 1
		if end >= len(raw) || (raw[end] != ' ' && raw[end] != '\t') {
			break
		}
	}
	field := string(raw[off:end])
	colon := strings.IndexByte(field, ':')
	if colon <= 0 || strings.ContainsAny(field[:colon], " \t\r\n") {
		return "", "", -1
	}
	value = strings.Join(strings.Fields(field[colon+1:]), " ")
	return field[:colon], value, end
}

// ReadMaildir reads every message in the Maildir dir (its new/ and cur/
// directories; tmp/ holds deliveries in progress), oldest first. A Maildir
// that does not exist yet holds no mail: Postfix creates it on the first
// delivery.
func ReadMaildir(dir string) ([]*Mail, error) {
	type file struct {
		path string
		mod  time.Time
	}
	var files []file
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // moved from new/ to cur/ meanwhile
			}
			if err != nil {
				return nil, err
			}
			files = append(files, file{filepath.Join(dir, sub, e.Name()), info.ModTime()})
		}
	}
	slices.SortFunc(files, func(a, b file) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		return strings.Compare(filepath.Base(a.path), filepath.Base(b.path))
	})
	mails := make([]*Mail, 0, len(files))
	for _, f := range files {
		raw, err := os.ReadFile(f.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		mails = append(mails, ParseMail(f.path, raw))
	}
	return mails, nil
}

// pollInterval is how often WaitMaildir looks again.
const pollInterval = 20 * time.Millisecond

// WaitMaildir waits up to timeout for a message in the Maildir dir for which
// pred returns true (nil matches any message) and returns the first one,
// oldest first. On timeout it fails the test, listing what the Maildir holds
// and the end of Postfix's log. Other tests deliver to the same Maildirs, so
// pred should match something unique to the test, e.g. [HeaderIs] on a
// Message-ID it generated.
func (e Env) WaitMaildir(t testing.TB, dir string, pred func(*Mail) bool, timeout time.Duration) *Mail {
	t.Helper()
	m, err := waitMaildir(dir, pred, timeout)
	if err != nil {
		t.Fatalf("peertest: %v%s", err, maillogTail(dir))
	}
	return m
}

func waitMaildir(dir string, pred func(*Mail) bool, timeout time.Duration) (*Mail, error) {
	return waitFor(dir, timeout, func() ([]*Mail, error) { return ReadMaildir(dir) },
		func(m *Mail) bool { return pred == nil || pred(m) },
		func(m *Mail) string {
			return fmt.Sprintf("%s from=<%s> to=<%s> Message-ID=%s Subject=%q",
				filepath.Base(m.Path), m.ReturnPath, m.DeliveredTo, m.Header("Message-ID"), m.Header("Subject"))
		})
}

// waitFor polls list until an item matches, or until timeout, when the
// error describes (up to 20 of) the items it saw.
func waitFor[T any](dir string, timeout time.Duration, list func() ([]T, error), match func(T) bool, describe func(T) string) (T, error) {
	var zero T
	deadline := time.Now().Add(timeout)
	for {
		items, err := list()
		if err != nil {
			return zero, err
		}
		for _, it := range items {
			if match(it) {
				return it, nil
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			fmt.Fprintf(&b, "no matching mail in %s after %v; it holds %d message(s)", dir, timeout, len(items))
			for i, it := range items {
				if i == 20 {
					fmt.Fprintf(&b, "\n  ...")
					break
				}
				fmt.Fprintf(&b, "\n  %s", describe(it))
			}
			return zero, errors.New(b.String())
		}
		time.Sleep(pollInterval)
	}
}

// maillogTail returns the last lines of Postfix's log when dir is one of the
// peers' Maildirs ($PEERS_DIR/postfix/mail/NAME, log in
// $PEERS_DIR/postfix/log/maillog).
func maillogTail(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "..", "..", "log", "maillog"))
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\nend of Postfix's maillog:\n  " + strings.Join(lines, "\n  ")
}
