// Command doctor checks a sender's DNS setup for both of mailroute's paths —
// direct from this host and through a relay — and prints what it found
// and what to change, as a table.
//
// With a domain it checks the real DNS (the system resolver, or -dns):
//
//	go run ./examples/doctor -ehlo mail.example.net -ip 203.0.113.5 \
//	    -relay email-smtp.eu-west-1.amazonaws.com:587 \
//	    -selector 2025a -key dkim.pem example.net
//
// Without arguments it needs no network: it checks a made-up sender whose
// setup is half right, served by a static mailtest.Resolver in this process.
//
//	go run ./examples/doctor
//
// The exit status is 0 when nothing is a problem, 2 when something is (with
// a domain given), 1 when the check could not run.
package main

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/doctor"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

func main() {
	log.SetFlags(0)
	ehlo := flag.String("ehlo", "", "the EHLO name of direct delivery (default: this host's name)")
	ip := flag.String("ip", "", "the public addresses direct delivery leaves from, comma-separated (default: the EHLO name's addresses)")
	noDirect := flag.Bool("no-direct", false, "mail is never sent direct: skip the EHLO, reverse DNS and direct SPF checks")
	relay := flag.String("relay", "", "the relay, host:port")
	relaySPF := flag.String("relay-spf", "", "the domain the relay asks you to include in SPF (default: known for well-known relays)")
	selector := flag.String("selector", "", "a DKIM selector to check; with -key, against that key")
	keyFile := flag.String("key", "", "a PEM file holding the DKIM private key (PKCS #8, or PKCS #1 RSA)")
	dnsAddr := flag.String("dns", "", "ask this DNS server (host:port) instead of the system resolver")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: doctor [flags] [domain]\n\nWithout a domain, checks a made-up half-right setup against in-process DNS answers.")
		flag.PrintDefaults()
	}
	flag.Parse()

	var cfg mailroute.Config
	var opts doctor.Options
	switch flag.NArg() {
	case 0:
		c, o, err := demo()
		if err != nil {
			log.Fatal(err)
		}
		cfg, opts = c, o
		fmt.Println("No domain given: checking a made-up sender, example.net, against DNS answers in this process.")
		fmt.Println("Run with -h to check your own.")
		fmt.Println()
	case 1:
		opts.Domain = flag.Arg(0)
		cfg.Hostname = *ehlo
		opts.NoDirect = *noDirect
		opts.RelaySPF = *relaySPF
		for _, s := range strings.FieldsFunc(*ip, func(r rune) bool { return r == ',' || r == ' ' }) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				log.Fatalf("-ip: %v", err)
			}
			opts.PublicIPs = append(opts.PublicIPs, a)
		}
		if *relay != "" {
			cfg.Relay = &mailroute.Relay{Addr: *relay}
		}
		if *dnsAddr != "" {
			cfg.Resolver = mailroute.DNSServer(*dnsAddr)
		}
		switch {
		case *keyFile != "" && *selector == "":
			log.Fatal("-key needs -selector")
		case *keyFile != "":
			key, err := loadKey(*keyFile)
			if err != nil {
				log.Fatalf("-key: %v", err)
			}
			cfg.DKIM = []mailroute.DKIMSignature{{Domain: opts.Domain, Selector: *selector, Signer: key}}
		case *selector != "":
			opts.DKIMSelectors = []string{*selector}
		}
	default:
		flag.Usage()
		os.Exit(1)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	report, err := doctor.Check(ctx, cfg, opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("Sender setup of %s\n\n", report.Domain)
	fmt.Print(report)
	counts := map[doctor.Status]int{}
	for _, f := range report.Findings {
		counts[f.Status]++
	}
	fmt.Printf("\n%d ok, %s, %s\n", counts[doctor.OK],
		plural(counts[doctor.Warning], "warning"), plural(counts[doctor.Problem], "problem"))
	if flag.NArg() > 0 && report.Status() == doctor.Problem {
		os.Exit(2)
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// loadKey reads a PEM private key that can sign DKIM.
func loadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block in " + path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: not a PKCS #8 or PKCS #1 private key: %v", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: a %T cannot sign", path, k)
	}
	return s, nil
}

// demo serves a sender that did half of it right, the way the person who
// set up reverse DNS, DKIM, SPF and DMARC by hand often ends up: the PTR is
// the provider's generic name, the DKIM record holds an older key, SPF
// forgot the relay, there is no DMARC record, and the relay is Amazon SES
// while the signatures cover the Message-ID SES replaces.
func demo() (mailroute.Config, doctor.Options, error) {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, "mailroute doctor demo key")
	key := ed25519.NewKeyFromSeed(seed)
	copy(seed, "an older key, still published")
	old := mailroute.DKIMSignature{Domain: "example.net", Selector: "2025a", Signer: ed25519.NewKeyFromSeed(seed)}
	oldRecord, err := old.Record()
	if err != nil {
		return mailroute.Config{}, doctor.Options{}, err
	}

	dns := &mailtest.Resolver{
		MX: map[string][]string{"example.net": {"mx.example.net"}},
		Hosts: map[string][]string{
			"mx.example.net":                     {"192.0.2.10"},
			"mail.example.net":                   {"192.0.2.1"},
			"static-192-0-2-1.isp.example":       {"192.0.2.1"},
			"email-smtp.eu-west-1.amazonaws.com": {"198.51.100.7"},
		},
		PTR: map[string][]string{"192.0.2.1": {"static-192-0-2-1.isp.example."}},
		TXT: map[string][]string{
			"example.net":                  {"v=spf1 ip4:192.0.2.1 ~all"},
			"2025a._domainkey.example.net": {oldRecord},
		},
	}
	cfg := mailroute.Config{
		Hostname: "mail.example.net",
		Relay:    &mailroute.Relay{Addr: "email-smtp.eu-west-1.amazonaws.com:587"},
		DKIM:     []mailroute.DKIMSignature{{Domain: "example.net", Selector: "2025a", Signer: key}},
		Resolver: dns,
	}
	opts := doctor.Options{Domain: "example.net", PublicIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
	return cfg, opts, nil
}
