package mailroute

import (
	"strings"
	"testing"
)

// TestExplainEchoes: words inside what the server echoes — addresses, host
// names, URLs, bracketed tokens — decide nothing (the old classifier sent
// nospam@ and antispam hosts to the relay), and a 4.7.x without a marker
// is not a block.
func TestExplainEchoes(t *testing.T) {
	for _, tt := range []struct {
		code int
		enh  EnhancedCode
		text string
		want string
	}{
		{550, EnhancedCode{5, 1, 1}, "<nospam@example.org>: Recipient address rejected: User unknown", `mailbox: "User unknown"`},
		{550, EnhancedCode{5, 1, 1}, "<junk@example.org>: Recipient address rejected: unknown", "mailbox: 5.1.1"},
		{550, EnhancedCode{5, 1, 1}, "dkim-reports@example.org: no mailbox here by that name", "mailbox: 5.1.1"},
		{450, EnhancedCode{4, 2, 0}, "mailbox busy at antispam-blocklist.example.net [198.51.100.7]", "mailbox: 4.2.0"},
		{451, EnhancedCode{4, 7, 1}, "Try again later", "temporary: 4.7.1"},
		{451, EnhancedCode{4, 7, 1}, "Try again later, see https://spamhaus.example/blocked", "temporary: 4.7.1"},
		{550, EnhancedCode{5, 7, 1}, "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1", `policy: "blocked using zen.spamhaus.org"`},
		{421, EnhancedCode{4, 7, 0}, "[TSS04] Messages from 192.0.2.1 temporarily deferred", `policy: "TSS04"`},
		{550, EnhancedCode{}, "no such user (spam@[192.0.2.7])", `mailbox: "no such user"`},
	} {
		v := explainReply(tt.code, tt.enh, tt.text, "RCPT")
		if v.String() != tt.want {
			t.Errorf("%d %v %q: %v, want %s", tt.code, tt.enh, tt.text, v, tt.want)
		}
	}
}

// FuzzExplainReply: for any reply, the classifier does not panic, returns
// a class a reply can have, and its explanation cites a marker that is in
// the reply's text or one of the reply's own codes.
func FuzzExplainReply(f *testing.F) {
	for _, c := range loadCorpus(f) {
		e := c.err(f)
		f.Add(e.Code, e.Enhanced[0], e.Enhanced[1], e.Enhanced[2], c.Command, c.Text)
	}
	f.Fuzz(func(t *testing.T, code, e0, e1, e2 int, command, text string) {
		if code < 200 || code > 599 {
			return
		}
		e := &Error{Code: code, Command: command, Message: text, Permanent: code >= 500}
		if e0 >= 2 && e0 <= 5 && e1 >= 0 && e1 < 1000 && e2 >= 0 && e2 < 1000 {
			e.Enhanced = EnhancedCode{e0, e1, e2}
		}
		v := Explain(e)
		switch v.Class {
		case ClassNone, ClassDNS, ClassConfig:
			t.Fatalf("a reply classified %v", v)
		}
		why := explanationEvidence(v)
		if why == "" || !evidencePresent(e, why) {
			t.Fatalf("explanation %v cites nothing in %d %v %q", v, code, e.Enhanced, text)
		}
		if v.Marker != "" && strings.Contains(strings.ToLower(v.Marker), "@") {
			t.Fatalf("marker %q is an echoed address", v.Marker)
		}
	})
}
