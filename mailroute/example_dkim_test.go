package mailroute_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

// Sign every message with DKIM. The key's TXT record comes from
// DKIMSignature.Record; publish it at RecordName before sending. (The MX
// and DNS run in-process on loopback here.)
func ExampleDKIMSignature() {
	_, key, _ := ed25519.GenerateKey(nil) // a real key is loaded from a file or held by a KMS
	sig := mailroute.DKIMSignature{Domain: "example.net", Selector: "2025a", Signer: key}
	record, err := sig.Record()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("publish at", sig.RecordName(), "the record", record[:22]+"…")

	mx, _ := mailtest.NewServer(mailtest.Options{})
	defer mx.Close()
	dns := &mailtest.Resolver{
		MX:    map[string][]string{"smallisp.example": {"mx.smallisp.example"}},
		Hosts: map[string][]string{"mx.smallisp.example": {"127.0.0.1"}},
		TXT:   map[string][]string{sig.RecordName(): {record}},
	}

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		DKIM:     []mailroute.DKIMSignature{sig},
		Resolver: dns,
		Direct:   mailroute.DirectOptions{Port: mx.Port()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	msg := "From: me@example.net\r\nTo: pal@smallisp.example\r\nSubject: signed\r\n\r\nHi.\r\n"
	if _, err := m.Send(context.Background(), "me@example.net", []string{"pal@smallisp.example"}, strings.NewReader(msg)); err != nil {
		log.Fatal(err)
	}

	// What the receiver got verifies against the published key.
	got := mx.Messages()[0].Data
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(got), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return dns.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, v := range vs {
		fmt.Println("d="+v.Domain, "valid:", v.Err == nil, "signed:", strings.Join(v.HeaderKeys, ":"))
	}
	// Output:
	// publish at 2025a._domainkey.example.net the record v=DKIM1; k=ed25519; p=…
	// d=example.net valid: true signed: From:From:Sender:Reply-To:To:To:Cc:Subject:Subject:Date:Date:Message-ID:Message-ID:In-Reply-To:References:MIME-Version:Content-Type:Content-Transfer-Encoding
}
