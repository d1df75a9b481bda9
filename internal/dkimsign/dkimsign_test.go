package dkimsign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// rsa2048 generates one key per test binary: generation takes seconds
// under -race.
func rsa2048(t testing.TB) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func edKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNormalize(t *testing.T) {
	ed := edKey(t)
	// crypto/rsa no longer makes keys this small; a Signer only has to
	// claim one.
	small := pubOnly{&rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 767), E: 65537}}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k, err := Normalize(Key{Domain: "Example.NET", Selector: "s2024.mail", Signer: ed})
	if err != nil || k.Domain != "example.net" {
		t.Fatalf("valid key: %+v, %v", k, err)
	}
	for _, tt := range []struct {
		key  Key
		want string
	}{
		{Key{Domain: "", Selector: "s", Signer: ed}, `domain ""`},
		{Key{Domain: "exa mple.net", Selector: "s", Signer: ed}, `domain "exa mple.net"`},
		{Key{Domain: "example.net", Selector: "", Signer: ed}, "empty selector"},
		{Key{Domain: "example.net", Selector: "bad_sel", Signer: ed}, `selector "bad_sel"`},
		{Key{Domain: "example.net", Selector: "-s", Signer: ed}, `selector "-s"`},
		{Key{Domain: "example.net", Selector: "s", Signer: nil}, "no Signer"},
		{Key{Domain: "example.net", Selector: "s", Signer: small}, "RSA key of 768 bits"},
		{Key{Domain: "example.net", Selector: "s", Signer: ec}, "*ecdsa.PublicKey key cannot sign DKIM"},
		{Key{Domain: "example.net", Selector: "s", Signer: ed, Headers: []string{"To"}}, "must include From"},
		{Key{Domain: "example.net", Selector: "s", Signer: ed, Headers: []string{"From", "Bad Name"}}, `"Bad Name" is not valid`},
	} {
		_, err := Normalize(tt.key)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Normalize(%q, %q): %v, want an error containing %q", tt.key.Domain, tt.key.Selector, err, tt.want)
		}
	}
}

func TestScanHeader(t *testing.T) {
	for _, tt := range []struct {
		msg       string
		counts    map[string]int
		bodyFirst bool
		from      string
	}{
		{"From: Ada <ada@Example.NET>\r\nTo: b@c.test\r\nSubject: x\r\n\r\nDate: not a header\r\n", map[string]int{"from": 1, "to": 1, "subject": 1}, false, "example.net"},
		{"FROM: \r\n  \"Ada, L.\" <ada@example.net>,\r\n bob@other.test\r\nmessage-id: <x@y>\r\n\r\nbody\r\n", map[string]int{"from": 1, "message-id": 1}, false, "example.net"},
		{"Received: a\r\nReceived: b\r\nSubject : obsolete space\r\n\r\n", map[string]int{"received": 2, "subject": 1}, false, ""},
		{"Hello, no header here.\r\nDate: not a header\r\n", map[string]int{}, true, ""},
		{"\r\nbody only\r\n", map[string]int{}, false, ""},
		{"Subject: header only\r\n", map[string]int{"subject": 1}, false, ""},
		{"Subject: a\r\nnot a field line\r\nDate: x\r\n", map[string]int{"subject": 1}, false, ""},
		{"From: undisclosed\r\n\r\n", map[string]int{"from": 1}, false, ""},
	} {
		h, err := ScanHeader(strings.NewReader(tt.msg))
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Count) != len(tt.counts) || h.BodyFirst != tt.bodyFirst || h.FromDomain != tt.from {
			t.Errorf("%q: %+v, want counts %v bodyFirst %v from %q", tt.msg, h, tt.counts, tt.bodyFirst, tt.from)
			continue
		}
		for k, n := range tt.counts {
			if h.Count[k] != n {
				t.Errorf("%q: %s counted %d, want %d", tt.msg, k, h.Count[k], n)
			}
		}
	}
}

// ScanHeader stops at the end of the header: a body it never reads may be
// arbitrarily large or fail.
func TestScanHeaderDoesNotReadTheBody(t *testing.T) {
	r := io.MultiReader(strings.NewReader("Subject: x\r\n\r\n"), errReader{})
	if _, err := ScanHeader(r); err != nil {
		t.Fatal(err)
	}
}

// pubOnly is a Signer that only has a public key.
type pubOnly struct{ pub crypto.PublicKey }

func (p pubOnly) Public() crypto.PublicKey { return p.pub }
func (p pubOnly) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("cannot sign")
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("the body was read") }

func TestRecordRoundTrip(t *testing.T) {
	for name, pub := range map[string]any{"rsa": rsa2048(t).Public(), "ed25519": edKey(t).Public()} {
		txt, err := Record(pub)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(txt, "v=DKIM1; k="+name+"; p=") {
			t.Errorf("%s record %q", name, txt)
		}
		rec, err := ParseRecord(txt)
		if err != nil || rec.Type != name || !SameKey(rec.Public, pub) {
			t.Errorf("%s: parsed %+v, %v", name, rec, err)
		}
		zone := ZoneTXT(txt)
		for _, part := range strings.Split(zone, `" "`) {
			if len(strings.Trim(part, `"`)) > 255 {
				t.Errorf("%s: a TXT string over 255 octets in %s", name, zone)
			}
		}
	}
}

func TestParseRecordErrors(t *testing.T) {
	for txt, want := range map[string]string{
		"v=DKIM1; k=rsa":             "no p= tag",
		"v=spf1 -all":                "not a DKIM key record",
		"v=DKIM1; k=ed25519; p=AAAA": "p= holds 3 octets",
		"v=DKIM1; k=rsa; p=!!!":      "not valid base64",
		"v=DKIM1; k=rsa; p=AAAA":     "not an RSA public key",
		"v=DKIM1; k=dsa; p=AAAA":     "unknown key type k=dsa",
		"k=rsa; v=DKIM1; p=":         "v= must be the first tag",
		"v=DKIM1; p=AAAA; p=AAAA":    "appears twice",
		"v=DKIM1; garbage; p=":       "not a tag=value pair",
	} {
		if _, err := ParseRecord(txt); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRecord(%q): %v, want %q", txt, err, want)
		}
	}
	rec, err := ParseRecord("v=DKIM1; k=rsa; t=y:s; h=sha256; p=")
	if err != nil || !rec.Revoked || !rec.Testing || len(rec.Hashes) != 1 {
		t.Errorf("revoked testing record: %+v, %v", rec, err)
	}
}

// verify checks msg's signatures with go-msgauth against the given
// records, by the name the verifier asks for.
func verify(t *testing.T, msg []byte, records map[string]string) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := records[name]; ok {
				return []string{r}, nil
			}
			return nil, errors.New("no such record")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestPrefixSignsAndCompletes(t *testing.T) {
	ed, rk := edKey(t), rsa2048(t)
	edRec, _ := Record(ed.Public())
	rsaRec, _ := Record(rk.Public())
	records := map[string]string{"ed._domainkey.example.net": edRec, "rsa._domainkey.example.net": rsaRec}
	msg := "From: Ada <ada@example.net>\r\nTo: bob@dest.test\r\nSubject: hi\r\n\r\nHello.\r\n"
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	prefix, err := Prefix(func() io.Reader { return strings.NewReader(msg) }, Options{
		Keys:    []Key{{Domain: "example.net", Selector: "ed", Signer: ed}, {Domain: "example.net", Selector: "rsa", Signer: rk}},
		AddDate: true, AddMessageID: true, Now: now, Hostname: "mail.example.net",
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(prefix, "DKIM-Signature:") != 2 {
		t.Fatalf("want two signatures:\n%s", prefix)
	}
	if !strings.Contains(prefix, "\r\nDate: Sat, 01 Mar 2025 12:00:00 +0000\r\n") {
		t.Errorf("no Date:\n%s", prefix)
	}
	if !strings.Contains(prefix, "@example.net>\r\n") || !strings.Contains(prefix, "\r\nMessage-ID: <") {
		t.Errorf("no Message-ID at the From domain:\n%s", prefix)
	}
	for _, v := range verify(t, []byte(prefix+msg), records) {
		if v.Err != nil {
			t.Errorf("%s: %v", v.Domain, v.Err)
		}
		want := "From:From:Sender:Reply-To:To:To:Cc:Subject:Subject:Date:Date:Message-ID:Message-ID:" +
			"In-Reply-To:References:MIME-Version:Content-Type:Content-Transfer-Encoding"
		if got := strings.Join(v.HeaderKeys, ":"); !strings.EqualFold(got, want) {
			t.Errorf("h=%s, want %s (every field over-signed, absent ones too)", got, want)
		}
	}
	// A second From, added on the way, breaks the over-signed signature.
	forged := prefix + "From: Mallory <m@evil.test>\r\n" + msg
	for _, v := range verify(t, []byte(forged), records) {
		if v.Err == nil {
			t.Errorf("%s: a message with an added From still verifies", v.Domain)
		}
	}
}

func TestPrefixAddsOnlyWhatIsMissing(t *testing.T) {
	opts := Options{AddDate: true, AddMessageID: true, Hostname: "mail.example.net"}
	open := func(s string) func() io.Reader { return func() io.Reader { return strings.NewReader(s) } }

	p, err := Prefix(open("date: Mon, 3 Mar 2025 10:00:00 +0000\r\nMESSAGE-ID: <a@b>\r\n\r\nx\r\n"), opts)
	if err != nil || p != "" {
		t.Errorf("complete message: prefix %q, %v", p, err)
	}
	// A "Date:" in the body is not a Date field.
	p, _ = Prefix(open("Subject: x\r\n\r\nDate: in the body\r\nMessage-ID: <in@body>\r\n"), opts)
	if !strings.HasPrefix(p, "Date: ") || !strings.Contains(p, "Message-ID: <") || !strings.Contains(p, "@mail.example.net>") {
		t.Errorf("fields in the body counted as header fields: %q", p)
	}
	// A message with no header section gets an empty line after the
	// added fields, so its first line stays body text.
	p, _ = Prefix(open("just text\r\n"), opts)
	if !strings.HasSuffix(p, ">\r\n\r\n") {
		t.Errorf("no empty line before a body-only message: %q", p)
	}
	opts.MessageIDDomain = "ids.example.org"
	p, _ = Prefix(open("From: a@example.net\r\n\r\nx\r\n"), opts)
	if !strings.Contains(p, "@ids.example.org>") {
		t.Errorf("MessageIDDomain not used: %q", p)
	}
	p, _ = Prefix(open("Subject: x\r\n\r\n"), Options{})
	if p != "" {
		t.Errorf("nothing asked, %q added", p)
	}
}

// Every field of the default list is over-signed: adding one on the way —
// a second instance, or one the message lacked — breaks the signature,
// while the message as signed verifies.
func TestOverSigningBreaksAddedFields(t *testing.T) {
	ed := edKey(t)
	rec, _ := Record(ed.Public())
	records := map[string]string{"ed._domainkey.example.net": rec}
	msg := "From: Ada <ada@example.net>\r\nTo: bob@dest.test\r\nSubject: hi\r\n" +
		"Date: Sat, 01 Mar 2025 12:00:00 +0000\r\nMessage-ID: <1@example.net>\r\n\r\nHello.\r\n"
	prefix, err := Prefix(func() io.Reader { return strings.NewReader(msg) }, Options{
		Keys: []Key{{Domain: "example.net", Selector: "ed", Signer: ed}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range verify(t, []byte(prefix+msg), records) {
		if v.Err != nil {
			t.Fatalf("the message as signed fails: %v", v.Err)
		}
	}
	for _, added := range []string{
		"Subject: urgent: wire the money",       // present: a second instance
		"To: mallory@evil.test",                 // present
		"From: Mallory <m@evil.test>",           // present
		"Reply-To: mallory@evil.test",           // absent
		"Cc: mallory@evil.test",                 // absent
		"Content-Type: text/html",               // absent
		"MIME-Version: 1.0",                     // absent
		"Content-Transfer-Encoding: base64",     // absent
		"Sender: mallory@evil.test",             // absent
		"In-Reply-To: <x@evil.test>",            // absent
		"Date: Sun, 02 Mar 2025 12:00:00 +0000", // present
	} {
		forged := prefix + added + "\r\n" + msg
		for _, v := range verify(t, []byte(forged), records) {
			if v.Err == nil {
				t.Errorf("%q prepended after signing: the signature still verifies", added)
			}
		}
	}
	// A field outside the list may be added (a relay's Received, say).
	for _, v := range verify(t, []byte(prefix+"X-Relay: seen\r\n"+msg), records) {
		if v.Err != nil {
			t.Errorf("an unsigned field broke the signature: %v", v.Err)
		}
	}
}
