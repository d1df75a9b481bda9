// Command tlsrpt shows authenticated TLS for direct delivery and the daily
// TLS report (RFC 8460) that goes with it, with no network: a DNS server
// in this process stands in for the validating resolver (its answers for
// the two domains carry the AD bit, as Unbound's do for signed zones), and
// two SMTP servers stand in for the MX hosts.
//
//	go run ./examples/tlsrpt
//
// good.example publishes a TLSA record matching its MX's certificate, so
// the message goes over DANE-verified TLS. bad.example's record matches
// nothing: the message is deferred, never sent in the clear. Both publish
// _smtp._tls, so the Mailer's TLS outcomes become one report per domain,
// which sendReport turns into the gzip'd report mail of RFC 8460 §5.3.
//
// In production DirectOptions.DANEResolver is a validating resolver on
// this host (Unbound: "127.0.0.1:53"); reports are made once a day for the
// day before, for each domain of TLSReportDomains that has addresses. With
// several instances on one queue store (a spool.Store, the River store),
// one of them makes the reports: they add up every instance's counts.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"mime/multipart"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

func main() {
	log.SetFlags(0)
	ctx := context.Background()
	ca, err := mailtest.NewCA()
	if err != nil {
		log.Fatal(err)
	}
	dns, err := mailtest.StartDNS()
	if err != nil {
		log.Fatal(err)
	}
	defer dns.Close()
	conf := ca.ServerConfig("mx.good.example", "mx.bad.example")
	mx, err := mailtest.NewServer(mailtest.Options{Hostname: "mx.good.example", TLS: conf})
	if err != nil {
		log.Fatal(err)
	}
	defer mx.Close()
	port := strconv.Itoa(mx.Port())
	leaf, _ := x509.ParseCertificate(conf.Certificates[0].Certificate[0])
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	for _, d := range []string{"good.example", "bad.example"} {
		dns.MX(d, "mx."+d).Host("mx."+d, "127.0.0.1").Secure(d)
		dns.Add(`_smtp._tls.` + d + `. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@` + d + `"`)
	}
	dns.Add("_" + port + "._tcp.mx.good.example. TLSA 3 1 1 " + hex.EncodeToString(spki[:]))
	dns.Add("_" + port + "._tcp.mx.bad.example. TLSA 3 1 1 " + strings.Repeat("00", 32))

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.sender.example",
		Resolver: mailroute.DNSServer(dns.Addr()),
		Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}},
		Direct: mailroute.DirectOptions{
			Port:         mx.Port(),
			DANEResolver: dns.Addr(), // in production: a validating resolver you trust
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	res, _ := m.Send(ctx, "ada@sender.example", []string{"bob@good.example", "eve@bad.example"},
		strings.NewReader("From: ada@sender.example\r\nSubject: hi\r\n\r\nHello.\r\n"))
	for _, r := range res.Recipients {
		fmt.Printf("%-18s %-9v tls=%-10v %v\n", r.Rcpt, r.Status, r.TLS, r.Err)
	}

	today := time.Now() // a real job reports yesterday: the zero Day
	for _, domain := range m.TLSReportDomains(today) {
		rua, err := m.TLSReportAddresses(ctx, domain)
		if err != nil || len(rua) == 0 {
			continue // no addresses: the domain wants no reports
		}
		report := m.TLSReport(domain, mailroute.TLSReportOptions{
			Organization: "Sender Example", Contact: "postmaster@sender.example", Day: today,
		})
		js, _ := json.MarshalIndent(report, "", "  ")
		fmt.Printf("\nreport for %s, to %v:\n%s\n", domain, rua, js)
		msg, err := reportMail(report, domain, "mail.sender.example", "tlsrpt@sender.example", strings.TrimPrefix(rua[0], "mailto:"))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("(a report mail of %d bytes, sent with m.Send to %s)\n", len(msg), rua[0])
	}
}

// reportMail builds the RFC 8460 §5.3 report mail: a multipart/report
// whose part is the gzip'd JSON, named as §5.1 says. An https: rua gets
// the gzip'd JSON alone, POSTed as application/tlsrpt+gzip.
func reportMail(r *mailroute.TLSReport, domain, submitter, from, to string) ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(js)
	zw.Close()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", "text/plain; charset=us-ascii")
	p, _ := mw.CreatePart(h)
	fmt.Fprintf(p, "This is an aggregate TLS report from %s.\r\n", submitter)
	name := fmt.Sprintf("%s!%s!%d!%d.json.gz", submitter, domain, r.DateRange.Start.Unix(), r.DateRange.End.Unix())
	h = textproto.MIMEHeader{}
	h.Set("Content-Type", "application/tlsrpt+gzip")
	h.Set("Content-Transfer-Encoding", "base64")
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	p, _ = mw.CreatePart(h)
	b64 := base64Lines(gz.Bytes())
	p.Write(b64)
	mw.Close()
	var msg bytes.Buffer
	fmt.Fprintf(&msg, "From: %s\r\nTo: %s\r\nSubject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n", from, to, domain, submitter, r.ReportID)
	fmt.Fprintf(&msg, "Date: %s\r\nTLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\nMIME-Version: 1.0\r\n", time.Now().Format(time.RFC1123Z), domain, submitter)
	fmt.Fprintf(&msg, "Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"%s\"\r\n\r\n", mw.Boundary())
	msg.Write(body.Bytes())
	return msg.Bytes(), nil
}

// base64Lines encodes b in lines of 76 characters (RFC 2045 §6.8).
func base64Lines(b []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(b)
	var out bytes.Buffer
	for len(enc) > 76 {
		out.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	out.WriteString(enc + "\r\n")
	return out.Bytes()
}
