package peertest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// MaddyMail is one message as maddy v0.8.1's submission endpoint stored it,
// configured by internal/peers/maddy.sh: one file per message (not per
// recipient) in Env.MaddyStore, named by a random key.
//
// What maddy does to a message on the way (checked against real
// submissions):
//
//   - The bytes are kept: CRLF line endings as sent, dot stuffing undone,
//     header fields written back as they came (spelling, folding, spacing).
//   - Fields are prepended to the header, in this order:
//     "Delivered-To: catchall" (the storage account, not a recipient),
//     "Return-Path: <sender>" (the MAIL FROM address, "<>" for the null
//     sender), "X-Envelope-From: <sender>" and "X-Envelope-To: rcpt1,rcpt2"
//     (the envelope, every RCPT TO in order, printed by maddy.sh's check
//     command; maddy records no recipient itself), then maddy's own
//     "Received: by mx.example.org (envelope-sender <sender>) with ESMTPS id
//     <msg-id>; <RFC 1123 date>", folded at about 78 columns; no "from"
//     clause (submission does not trace the client), no "(envelope-sender
//     ...)" for the null sender, and ESMTPS (not ESMTPSA) even after AUTH,
//     UTF8ESMTPS when the client asked for SMTPUTF8.
//   - The envelope addresses are maddy's normalized ones: the domain is
//     lower-cased ("User@Example.ORG" becomes "User@example.org"), the local
//     part kept.
//   - Submission completes the header: a message without Date gets "Date:
//     <now, UTC>" and one without Message-ID gets "Message-Id:
//     <uuid@mx.example.org>", both right below the Received field (Date
//     first). [MaddyMail.Added] names them; [MaddyMail.Sent] leaves them out.
//   - Submission refuses (554 5.6.0) a message without From, or with a
//     malformed From (such as "<>"), Sender, To, Cc, Bcc, Reply-To or Date,
//     and (554 5.0.0 "Internal server error") one with a line longer than
//     4,000 octets, which Postfix would take.
//
// maddy writes the file before it answers the end of data, but not
// atomically (the file is first extended with NUL bytes, then written):
// [Env.WaitMaddy] ignores files that are still being written.
type MaddyMail struct {
	// Path is the file in the store.
	Path string
	// Raw is the file as stored.
	Raw []byte
	// From is the envelope sender (X-Envelope-From) without the angle
	// brackets; "" for the null sender or a file without the field.
	From string
	// To lists the envelope recipients (X-Envelope-To) as the client gave
	// them in RCPT TO, in order.
	To []string
	// ReturnPath is the sender in maddy's Return-Path field, without the
	// angle brackets (the same as From).
	ReturnPath string
	// Received is the value of maddy's Received field, unfolded; "" when
	// the file has none.
	Received string
	// Added names the header fields maddy's submission endpoint added
	// because the message lacked them: "Date", "Message-Id", in the order
	// stored.
	Added []string

	msgStart  int // offset in Raw after maddy's trace fields
	sentStart int // offset in Raw after the fields in Added as well
}

// Message returns the stored message without the fields maddy prepended for
// tracing (Delivered-To, Return-Path, X-Envelope-From, X-Envelope-To and its
// Received), but with the Date and Message-Id it may have added: what a
// recipient would read, less the trace.
func (m *MaddyMail) Message() []byte { return m.Raw[m.msgStart:] }

// Sent returns the message as the client sent it (the DATA, before dot
// stuffing), byte for byte: [MaddyMail.Message] without the fields in
// [MaddyMail.Added].
func (m *MaddyMail) Sent() []byte { return m.Raw[m.sentStart:] }

// Header returns the value of the first header field called name in
// [MaddyMail.Message] (case-insensitive, so a Message-Id maddy added counts),
// or "" when there is none.
func (m *MaddyMail) Header(name string) string {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Message()))
	if err != nil {
		return ""
	}
	return msg.Header.Get(name)
}

// HasRcpt reports whether rcpt is one of the envelope recipients
// (case-insensitive).
func (m *MaddyMail) HasRcpt(rcpt string) bool {
	return slices.ContainsFunc(m.To, func(r string) bool { return strings.EqualFold(r, rcpt) })
}

// MaddyTo matches a message with rcpt among its envelope recipients.
func MaddyTo(rcpt string) func(*MaddyMail) bool {
	return func(m *MaddyMail) bool { return m.HasRcpt(rcpt) }
}

// MaddyHeaderIs matches a message whose header has the field name with
// exactly value, e.g. MaddyHeaderIs("Message-ID", "<"+id+">").
func MaddyHeaderIs(name, value string) func(*MaddyMail) bool {
	return func(m *MaddyMail) bool { return m.Header(name) == value }
}

// maddyDateLayout is how maddy's submission writes a Date it adds (UTC).
const maddyDateLayout = "Mon, 2 Jan 2006 15:04:05 -0700"

var (
	maddyDate  = regexp.MustCompile(`^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), [1-9][0-9]? (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} \+0000\r\n$`)
	maddyMsgID = regexp.MustCompile(`^Message-Id: <[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}@[^<>@\s]+>\r\n$`)
)

// ParseMaddyMail parses one file of maddy's store (see [MaddyMail]).
func ParseMaddyMail(path string, raw []byte) *MaddyMail {
	m := &MaddyMail{Path: path, Raw: raw}
	off, envelope := 0, false
	// The fields imapsql and the check command prepend, in any order.
	for off < len(raw) {
		name, value, next := headerField(raw, off)
		switch {
		case strings.EqualFold(name, "Delivered-To"):
		case strings.EqualFold(name, "Return-Path"):
			m.ReturnPath = unbracket(value)
		case strings.EqualFold(name, "X-Envelope-From"):
			m.From, envelope = unbracket(value), true
		case strings.EqualFold(name, "X-Envelope-To"):
			envelope = true
			for _, r := range strings.Split(value, ",") {
				if r = strings.TrimSpace(r); r != "" {
					m.To = append(m.To, r)
				}
			}
		default:
			next = -1
		}
		if next < 0 {
			break
		}
		off = next
	}
	// Then maddy's Received, only in a file that has the envelope fields
	// (one not written by this peer is left alone).
	var received time.Time
	if envelope {
		if name, value, next := headerField(raw, off); strings.EqualFold(name, "Received") {
			m.Received = value
			off = next
			if i := strings.LastIndexByte(value, ';'); i >= 0 {
				received, _ = time.Parse(time.RFC1123Z, strings.TrimSpace(value[i+1:]))
			}
		}
	}
	m.msgStart = off
	// Then the Date and Message-Id submission added: the field maddy
	// writes, exactly, right below the Received field; a Date only when
	// it is within seconds of the Received field's.
	if m.Received != "" {
		if name, _, next := headerField(raw, off); name == "Date" && maddyDate.Match(raw[off:next]) {
			d, err := time.Parse(maddyDateLayout, strings.TrimSpace(string(raw[off+len("Date:"):next])))
			if diff := received.Sub(d); err == nil && !received.IsZero() && diff > -5*time.Second && diff < 5*time.Second {
				m.Added = append(m.Added, "Date")
				off = next
			}
		}
		if name, _, next := headerField(raw, off); name == "Message-Id" && maddyMsgID.Match(raw[off:next]) {
			m.Added = append(m.Added, "Message-Id")
			off = next
		}
	}
	m.sentStart = off
	return m
}

func unbracket(s string) string {
	return strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
}

// ReadMaddyStore reads every message in maddy's store dir, oldest first.
// A store that does not exist yet holds no mail. A file still being written
// is read as it is (see [MaddyMail]); [Env.WaitMaddy] skips those.
func ReadMaddyStore(dir string) ([]*MaddyMail, error) {
	mails, _, err := readMaddyStore(dir)
	return mails, err
}

// readMaddyStore also reports, per message, whether its file looks
// complete: no NUL byte (maddy extends a new file to its final size with
// NULs before writing it), or not modified for a while.
func readMaddyStore(dir string) ([]*MaddyMail, []bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	type file struct {
		path string
		mod  time.Time
	}
	var files []file
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		files = append(files, file{filepath.Join(dir, e.Name()), info.ModTime()})
	}
	slices.SortFunc(files, func(a, b file) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		return strings.Compare(a.path, b.path)
	})
	mails := make([]*MaddyMail, 0, len(files))
	complete := make([]bool, 0, len(files))
	for _, f := range files {
		raw, err := os.ReadFile(f.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		mails = append(mails, ParseMaddyMail(f.path, raw))
		complete = append(complete, bytes.IndexByte(raw, 0) < 0 || time.Since(f.mod) > 2*time.Second)
	}
	return mails, complete, nil
}

// WaitMaddy waits up to timeout for a message in maddy's store dir
// (normally e.MaddyStore) for which pred returns true (nil matches any
// message) and returns the first one, oldest first. On timeout it fails the
// test, listing what the store holds and the end of maddy's log. Other
// tests submit to the same store, so pred should match something unique to
// the test, e.g. [MaddyHeaderIs] on a Message-ID it generated.
func (e Env) WaitMaddy(t testing.TB, dir string, pred func(*MaddyMail) bool, timeout time.Duration) *MaddyMail {
	t.Helper()
	m, err := waitMaddy(dir, pred, timeout)
	if err != nil {
		t.Fatalf("peertest: %v%s", err, maddyLogTail(dir))
	}
	return m
}

func waitMaddy(dir string, pred func(*MaddyMail) bool, timeout time.Duration) (*MaddyMail, error) {
	type stored struct {
		m        *MaddyMail
		complete bool
	}
	st, err := waitFor(dir, timeout, func() ([]stored, error) {
		mails, complete, err := readMaddyStore(dir)
		out := make([]stored, len(mails))
		for i := range mails {
			out[i] = stored{mails[i], complete[i]}
		}
		return out, err
	}, func(s stored) bool {
		return s.complete && (pred == nil || pred(s.m))
	}, func(s stored) string {
		state := ""
		if !s.complete {
			state = " (still being written)"
		}
		return fmt.Sprintf("%s from=<%s> to=%v Message-ID=%s Subject=%q%s",
			filepath.Base(s.m.Path), s.m.From, s.m.To, s.m.Header("Message-ID"), s.m.Header("Subject"), state)
	})
	return st.m, err
}

// maddyLogTail returns the last lines of maddy's log when dir is the peers'
// store ($PEERS_DIR/maddy/store/NAME, log in $PEERS_DIR/maddy/maddy.log).
func maddyLogTail(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "..", "..", "maddy.log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\nend of maddy's log:\n  " + strings.Join(lines, "\n  ")
}
