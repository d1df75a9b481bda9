package mailroute

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"math/big"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailroute/go-mailroute/internal/dkimsign"
	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/message"
	"github.com/mailroute/go-mailroute/internal/mx"
	"github.com/mailroute/go-mailroute/internal/smtptest"
)

var (
	testRSAOnce sync.Once
	testRSAKey  *rsa.PrivateKey
)

// testRSA2048 is one RSA-2048 key per test binary: generating one takes
// seconds under -race.
func testRSA2048() *rsa.PrivateKey {
	testRSAOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testRSAKey = k
	})
	return testRSAKey
}

func testEd25519(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publishDKIM serves s's public key record on dns, split into TXT strings
// of at most 255 octets as a zone file would have it.
func publishDKIM(t testing.TB, dns *dnstest.Server, s DKIMSignature) {
	t.Helper()
	rec, err := s.Record()
	if err != nil {
		t.Fatal(err)
	}
	dns.Add(s.RecordName() + ". TXT " + dkimsign.ZoneTXT(rec))
}

// verifyDKIM checks msg's signatures with go-msgauth's verifier, which
// fetches the keys from the test DNS server.
func verifyDKIM(t *testing.T, dns *dnstest.Server, msg []byte) []*dkim.Verification {
	t.Helper()
	r := &mx.ServerResolver{Addr: dns.Addr}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return r.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// One Send to a recipient routed direct and one routed to the relay:
// both receivers get the same bytes, signed with an RSA-2048 and an Ed25519
// key, and both signatures verify against the keys in DNS after going
// through real SMTP servers. Any change in transit breaks them.
func TestDKIMSignsOnceForBothPaths(t *testing.T) {
	w := newDirectWorld(t)
	mxs := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	rw := newRelay(t, smtptest.Options{})

	sigs := []DKIMSignature{
		{Domain: "sender.test", Selector: "rsa2025", Signer: testRSA2048()},
		{Domain: "sender.test", Selector: "ed2025", Signer: testEd25519(t)},
	}
	for _, s := range sigs {
		publishDKIM(t, w.dns, s)
	}
	m := w.mailer(Config{
		DKIM:   sigs,
		Relay:  rw.relay(),
		Router: Rules{{Domains: []string{"gmail.test"}, Via: Relayed}, {Domains: []string{"*"}, Via: Direct}},
	})
	res, err := send(t, m, "a@sender.test", []string{"b@dest.test", "c@gmail.test"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	if res.Recipients[0].Via != Direct || res.Recipients[1].Via != Relayed {
		t.Fatalf("routes %v, %v", res.Recipients[0].Via, res.Recipients[1].Via)
	}
	direct, relayed := mxs.Messages(), rw.s.Messages()
	if len(direct) != 1 || len(relayed) != 1 {
		t.Fatalf("%d direct and %d relayed messages", len(direct), len(relayed))
	}
	if !bytes.Equal(direct[0].Data, relayed[0].Data) {
		t.Errorf("the two paths carried different bytes:\n%s\n---\n%s", direct[0].Data, relayed[0].Data)
	}
	got := direct[0].Data
	if !bytes.HasSuffix(got, []byte(testBody)) {
		t.Errorf("the message itself changed:\n%s", got)
	}
	for _, want := range []string{`(?m)^DKIM-Signature: .*a=rsa-sha256`, `(?m)^DKIM-Signature: .*a=ed25519-sha256`, `(?m)^Date: \w{3}, \d\d \w{3} \d{4} `, `(?m)^Message-ID: <[a-z2-7]{26}@sender\.test>\r$`} {
		if !regexp.MustCompile(want).Match(got) {
			t.Errorf("no match for %s in\n%s", want, got)
		}
	}
	for _, msg := range [][]byte{direct[0].Data, relayed[0].Data} {
		vs := verifyDKIM(t, w.dns, msg)
		if len(vs) != 2 {
			t.Fatalf("%d signatures", len(vs))
		}
		for _, v := range vs {
			if v.Err != nil {
				t.Errorf("signature of %s does not verify: %v", v.Domain, v.Err)
			}
		}
	}

	for name, change := range map[string]func([]byte) []byte{
		"body":    func(b []byte) []byte { return bytes.Replace(b, []byte("Hello."), []byte("Hel1o."), 1) },
		"subject": func(b []byte) []byte { return bytes.Replace(b, []byte("Subject: hi"), []byte("Subject: HI"), 1) },
		"added From": func(b []byte) []byte {
			return bytes.Replace(b, []byte("From: a@sender.test"), []byte("From: ceo@sender.test\r\nFrom: a@sender.test"), 1)
		},
		"message-id": func(b []byte) []byte {
			return regexp.MustCompile(`Message-ID: <[^>]*>`).ReplaceAll(b, []byte("Message-ID: <rewritten@relay.example>"))
		},
	} {
		for _, v := range verifyDKIM(t, w.dns, change(bytes.Clone(got))) {
			if v.Err == nil {
				t.Errorf("%s changed in transit, and a signature still verifies", name)
			}
		}
	}
}

// Existing Date and Message-ID fields, in any case, are kept and signed.
func TestDKIMKeepsExistingFields(t *testing.T) {
	w := newDirectWorld(t)
	mxs := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	sig := DKIMSignature{Domain: "sender.test", Selector: "s", Signer: testEd25519(t)}
	publishDKIM(t, w.dns, sig)
	m := w.mailer(Config{DKIM: []DKIMSignature{sig}})
	body := "from: a@sender.test\r\ndate: Mon, 3 Mar 2025 10:00:00 +0000\r\nmessage-id: <kept@sender.test>\r\n\r\nHi.\r\n"
	if _, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, body); err != nil {
		t.Fatal(err)
	}
	got := string(mxs.Messages()[0].Data)
	if strings.Count(strings.ToLower(got), "\r\ndate:") != 1 || strings.Count(strings.ToLower(got), "\r\nmessage-id:") != 1 || !strings.HasSuffix(got, body) {
		t.Errorf("fields added although present:\n%s", got)
	}
	vs := verifyDKIM(t, w.dns, []byte(got))
	if len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("verification: %+v", vs)
	}
	if h := strings.ToLower(strings.Join(vs[0].HeaderKeys, ":")); h != "from:from:sender:reply-to:to:cc:subject:date:date:message-id:message-id:in-reply-to:references:mime-version:content-type:content-transfer-encoding" {
		t.Errorf("h=%s", h)
	}
}

func TestHeadersAddMissing(t *testing.T) {
	sig := DKIMSignature{Domain: "sender.test", Selector: "s", Signer: testEd25519(t)}
	for _, tt := range []struct {
		name              string
		cfg               Config
		signed, completed bool
	}{
		{"default, unsigned: as given", Config{}, false, false},
		{"default, signed: completed", Config{DKIM: []DKIMSignature{sig}}, true, true},
		{"always, unsigned", Config{Headers: HeaderOptions{Add: AddMissingAlways}}, false, true},
		{"never, signed", Config{DKIM: []DKIMSignature{sig}, Headers: HeaderOptions{Add: AddMissingNever}}, true, false},
	} {
		w := newDirectWorld(t)
		mxs := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
		w.dns.MX("dest.test", "mx.dest.test")
		m := w.mailer(tt.cfg)
		if _, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody); err != nil {
			t.Fatal(err)
		}
		got := string(mxs.Messages()[0].Data)
		if signed := strings.HasPrefix(got, "DKIM-Signature:"); signed != tt.signed {
			t.Errorf("%s: signed %v:\n%s", tt.name, signed, got)
		}
		completed := strings.Contains(got, "\r\nDate: ") || strings.HasPrefix(got, "Date: ")
		if completed != tt.completed || strings.Contains(got, "Message-ID: <") != tt.completed {
			t.Errorf("%s: Date and Message-ID added: %v:\n%s", tt.name, completed, got)
		}
		if !tt.signed && !tt.completed && got != testBody {
			t.Errorf("%s: the message changed:\n%s", tt.name, got)
		}
	}
}

// Without a From domain the Message-ID takes the host name, or the domain
// configured for it.
func TestMessageIDDomain(t *testing.T) {
	for domain, want := range map[string]string{"": "@mail.sender.test>", "ids.sender.test": "@ids.sender.test>"} {
		w := newDirectWorld(t)
		mxs := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
		w.dns.MX("dest.test", "mx.dest.test")
		m := w.mailer(Config{Headers: HeaderOptions{Add: AddMissingAlways, MessageIDDomain: domain}})
		if _, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, "Subject: no From\r\n\r\nx\r\n"); err != nil {
			t.Fatal(err)
		}
		if got := string(mxs.Messages()[0].Data); !strings.Contains(got, want) {
			t.Errorf("MessageIDDomain %q: want %s in\n%s", domain, want, got)
		}
	}
}

// A message that spilled to a file is signed from the file, and the
// signed copy verifies.
func TestDKIMSpilledBody(t *testing.T) {
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	sig := DKIMSignature{Domain: "sender.test", Selector: "s", Signer: testEd25519(t)}
	publishDKIM(t, dns, sig)
	m := &Mailer{cfg: Config{DKIM: []DKIMSignature{sig}}, hostname: "mail.sender.test"}
	text := testBody + strings.Repeat("a line of the body\r\n", 1000)
	b, err := message.NewBody(strings.NewReader(text), message.BodyOptions{SpillOver: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, inMemory := b.Bytes(); inMemory {
		t.Fatal("the body did not spill")
	}
	signed, err := m.prepareBody(b)
	if err != nil {
		t.Fatal(err)
	}
	defer signed.Close()
	got, err := io.ReadAll(signed.Reader())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(got, []byte(text)) || signed.Size() != int64(len(got)) {
		t.Fatalf("signed copy: %d octets, size %d", len(got), signed.Size())
	}
	if vs := verifyDKIM(t, dns, got); len(vs) != 1 || vs[0].Err != nil {
		t.Errorf("verification: %+v", vs[0])
	}
}

// pubOnly is a Signer that only claims a public key.
type pubOnly struct{ pub crypto.PublicKey }

func (p pubOnly) Public() crypto.PublicKey                                  { return p.pub }
func (p pubOnly) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, io.EOF }

func TestCheckDKIM(t *testing.T) {
	ed := testEd25519(t)
	small := pubOnly{&rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1022), E: 65537}}
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{DKIM: []DKIMSignature{{Domain: "sender.test", Selector: "s", Signer: ed}}}, ""},
		{Config{DKIM: []DKIMSignature{{Domain: "sender..test", Selector: "s", Signer: ed}}}, `Config.DKIM[0]: domain "sender..test"`},
		{Config{DKIM: []DKIMSignature{{Domain: "sender.test", Selector: "a b", Signer: ed}}}, `Config.DKIM[0]: selector "a b"`},
		{Config{DKIM: []DKIMSignature{{Domain: "sender.test", Selector: "s", Signer: ed}, {Domain: "sender.test", Selector: "s2"}}}, "Config.DKIM[1]: selector \"s2\": no Signer"},
		{Config{DKIM: []DKIMSignature{{Domain: "sender.test", Selector: "s", Signer: small}}}, "RSA key of 1023 bits: receivers refuse keys under 1024 bits (RFC 8301); use 2048"},
		{Config{DKIM: []DKIMSignature{{Domain: "sender.test", Selector: "s", Signer: ed, Headers: []string{"Subject"}}}}, "Headers must include From"},
		{Config{Headers: HeaderOptions{Add: 7}}, "Config.Headers.Add: unknown value AddMissing(7)"},
		{Config{Headers: HeaderOptions{MessageIDDomain: "a..b"}}, "Config.Headers.MessageIDDomain"},
	} {
		err := tt.cfg.checkDKIM()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("checkDKIM: %v, want %q", err, tt.want)
		}
	}
}

// A bad DKIM configuration fails Send clearly, before anything is sent,
// even if New did not check it.
func TestSendRefusesBadDKIM(t *testing.T) {
	w := newDirectWorld(t)
	mxs := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{})
	m.cfg.DKIM = []DKIMSignature{{Domain: "sender.test", Selector: "s"}}
	_, err := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
	if err == nil || !strings.Contains(err.Error(), "Config.DKIM[0]") {
		t.Errorf("err = %v", err)
	}
	if mxs.Connections() != 0 {
		t.Error("sent with a bad DKIM configuration")
	}
}

func TestDKIMRecord(t *testing.T) {
	ed := testEd25519(t)
	s := DKIMSignature{Domain: "Sender.TEST", Selector: "s1", Signer: ed}
	if got := s.RecordName(); got != "s1._domainkey.sender.test" {
		t.Errorf("RecordName = %q", got)
	}
	rec, err := s.Record()
	if err != nil || !strings.HasPrefix(rec, "v=DKIM1; k=ed25519; p=") {
		t.Errorf("Record = %q, %v", rec, err)
	}
	if _, err := (DKIMSignature{Domain: "sender.test", Selector: "s"}).Record(); err == nil {
		t.Error("Record without a Signer: no error")
	}
	h := DefaultDKIMHeaders()
	h[0] = "X-Changed"
	if DefaultDKIMHeaders()[0] != "From" {
		t.Error("DefaultDKIMHeaders shares its slice")
	}
}
