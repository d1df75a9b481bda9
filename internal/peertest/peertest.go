// Package peertest connects tests to the real servers that
// internal/peers/peers.sh runs on loopback: Postfix (an MX-style receiver on
// 127.0.0.1 and 127.0.0.2, and an authenticated submission relay),
// maddy (a second authenticated submission relay) and CoreDNS (the test
// zones). It only reads the environment printed by `peers.sh env`; it
// starts nothing.
//
//	bash internal/peers/peers.sh start
//	eval "$(bash internal/peers/peers.sh env)"
//	go test ./...
//
// A test calls [Require] first. Without MAILROUTE_PEERS=1 the test is skipped,
// so `go test ./...` works anywhere; with it, a missing variable or an
// unreachable peer fails the test (CI must never skip them silently).
//
// Mail that Postfix accepts is stored in Maildirs (one file per recipient);
// [ReadMaildir] and [Env.WaitMaildir] read them back and [Mail.Sent] returns
// the message as the client sent it, for byte-for-byte comparisons. Mail
// that maddy accepts is stored one file per message in Env.MaddyStore;
// [ReadMaddyStore] and [Env.WaitMaddy] read it back, with the envelope, and
// [MaddyMail.Sent] returns the message as the client sent it.
//
// The DNS zones (see internal/peers/README.md):
//
//	example.org       MX 10 mx1.example.org (127.0.0.1), MX 20 mx2.example.org (127.0.0.2)
//	mx-test.internal  MX 10 mail.mx-test.internal (127.0.0.1)
//	mx1down.test      MX 10 dead.mx1down.test (127.0.0.9, closed), MX 20 live.mx1down.test (127.0.0.2)
//	nullmx.test       MX 0 .
//	cnamemx.test      MX 5 alias.example.org (CNAME mx1.example.org)
//	amx.test          A 127.0.0.1, no MX
//	v6only.test       MX 10 v6.test (AAAA ::1 only)
//	gws.test          MX 1 aspmx.l.google.com, MX 5 alt1.aspmx.l.google.com
//	m365.test         MX 0 m365-test.mail.protection.outlook.com
//	mixed.test        MX 10 aspmx.l.google.com, MX 20 mail.mixed.test (127.0.0.1)
//	servfail.test     SERVFAIL
//	timeout.test      no answer
//	anything else     NXDOMAIN
//
// PostgreSQL (Env.PostgresURL) holds the shared queue of
// mailroute/riverqueue; its tests create a schema of their own per test.
//
// Postfix accepts mail (port Env.PostfixPort on 127.0.0.1 and 127.0.0.2) for
// example.org, mx-test.internal, mx1down.test, cnamemx.test, amx.test and
// mixed.test; recipients whose local part starts with "reject" get
// 550 5.1.1, "tempfail" 450 4.2.0; other domains 554 5.7.1 (relay denied).
package peertest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Env describes the running peers, as printed by `peers.sh env`.
type Env struct {
	// DNS is the host:port of the test DNS server, UDP and TCP
	// (MAILROUTE_DNS, "127.0.0.1:5353").
	DNS string
	// PostfixPort is the port of Postfix's MX-style receiver, which listens
	// on both 127.0.0.1 and 127.0.0.2 (MAILROUTE_POSTFIX_PORT, 2525). The
	// MX hosts of the test zones resolve to those addresses; direct delivery
	// tests set this as the port to dial.
	PostfixPort int
	// PostfixMaildir is the Maildir receiving every recipient accepted on
	// PostfixPort (MAILROUTE_POSTFIX_MAILDIR). Postfix creates it on the
	// first delivery.
	PostfixMaildir string
	// PostfixCert is the PEM file of the self-signed certificate every
	// Postfix listener presents (MAILROUTE_POSTFIX_CERT). It is valid for
	// mx.example.org, mx1.example.org, mx2.example.org,
	// mail.mx-test.internal, live.mx1down.test, mail.mixed.test, amx.test,
	// localhost, 127.0.0.1 and 127.0.0.2. See [Env.CertPool].
	PostfixCert string
	// SubmissionAddr is the relay with STARTTLS + AUTH
	// (MAILROUTE_SUBMISSION_ADDR, "127.0.0.1:5870").
	SubmissionAddr string
	// SubmissionsAddr is the relay with implicit TLS + AUTH
	// (MAILROUTE_SUBMISSIONS_ADDR, "127.0.0.1:4650").
	SubmissionsAddr string
	// SubmittedMaildir receives everything accepted by the relay
	// listeners, whatever the recipient domain (MAILROUTE_SUBMITTED_MAILDIR).
	SubmittedMaildir string
	// SmarthostUser and SmarthostPass are the SASL credentials
	// (MAILROUTE_SMARTHOST_USER / MAILROUTE_SMARTHOST_PASS); PLAIN, LOGIN
	// and CRAM-MD5 are offered, only after TLS.
	SmarthostUser, SmarthostPass string

	// MaddySubmissionAddr is maddy's submission endpoint with STARTTLS +
	// AUTH (MAILROUTE_MADDY_SUBMISSION_ADDR, "127.0.0.1:5871"). It
	// advertises AUTH PLAIN only (LOGIN works when sent anyway), only after
	// TLS, and answers a wrong password with 454 4.7.0, not 535.
	MaddySubmissionAddr string
	// MaddySubmissionsAddr is the same with implicit TLS
	// (MAILROUTE_MADDY_SUBMISSIONS_ADDR, "127.0.0.1:4651").
	MaddySubmissionsAddr string
	// MaddyStore is the directory where maddy stores every message its
	// submission endpoints accept, one file per message, whatever the
	// recipients (MAILROUTE_MADDY_STORE). See [MaddyMail].
	MaddyStore string
	// MaddyCert is the PEM file of maddy's self-signed certificate
	// (MAILROUTE_MADDY_CERT), valid for mx.example.org, localhost and
	// 127.0.0.1. See [Env.MaddyCertPool].
	MaddyCert string
	// MaddyUser and MaddyPass are maddy's credentials
	// (MAILROUTE_MADDY_USER / MAILROUTE_MADDY_PASS, which `peers.sh env`
	// prints only when they differ from SmarthostUser and SmarthostPass;
	// those are the default).
	MaddyUser, MaddyPass string

	// PostgresURL is the connection URL of the PostgreSQL server that
	// internal/peers/postgres.sh runs on loopback, for the shared queue's
	// tests (MAILROUTE_POSTGRES_URL,
	// "postgres://mailroute:mailroute@127.0.0.1:5433/mailroute?sslmode=disable").
	// The role owns the database: tests create their own schemas in it.
	PostgresURL string

	// DNSSEC is the host:port of the validating resolver (Unbound) in
	// front of the signed test zones that internal/peers/dnssec.sh runs
	// (MAILROUTE_DNSSEC_RESOLVER, "127.0.0.1:5355"). Tests that need it
	// call [Env.RequireDNSSEC].
	DNSSEC string
}

// RequireDNSSEC fails the test unless the validating resolver is set and
// answers the signed example.org with the AD bit.
func (e Env) RequireDNSSEC(t testing.TB) string {
	t.Helper()
	if e.DNSSEC == "" {
		t.Fatal("peertest: MAILROUTE_DNSSEC_RESOLVER is not set: bash internal/peers/peers.sh start, then eval the env again")
	}
	q := new(dns.Msg)
	q.SetQuestion("example.org.", dns.TypeMX)
	q.SetEdns0(1232, true)
	c := &dns.Client{Timeout: probeTimeout}
	resp, _, err := c.Exchange(q, e.DNSSEC)
	if err != nil {
		t.Fatalf("peertest: the validating resolver %s: %v", e.DNSSEC, err)
	}
	if !resp.AuthenticatedData {
		t.Fatalf("peertest: the validating resolver %s does not authenticate example.org (no AD bit)", e.DNSSEC)
	}
	return e.DNSSEC
}

// PostfixAddr returns ip:PostfixPort, ip being "127.0.0.1" or "127.0.0.2".
func (e Env) PostfixAddr(ip string) string {
	return net.JoinHostPort(ip, strconv.Itoa(e.PostfixPort))
}

// CertPool returns a pool holding PostfixCert, for tls.Config.RootCAs in
// tests that verify the peers' certificate.
func (e Env) CertPool(t testing.TB) *x509.CertPool {
	t.Helper()
	pool, err := loadCert("Postfix", e.PostfixCert)
	if err != nil {
		t.Fatalf("peertest: %v", err)
	}
	return pool
}

// MaddyCertPool returns a pool holding MaddyCert, for tls.Config.RootCAs in
// tests that verify maddy's certificate.
func (e Env) MaddyCertPool(t testing.TB) *x509.CertPool {
	t.Helper()
	pool, err := loadCert("maddy", e.MaddyCert)
	if err != nil {
		t.Fatalf("peertest: %v", err)
	}
	return pool
}

// The skip message, also the pointer to how the peers are started.
const skipMsg = "real peers not enabled; set MAILROUTE_PEERS=1 (see internal/peers/peers.sh)"

var (
	checkOnce sync.Once
	checked   Env
	checkErr  error
)

// Require returns the peers' Env, or skips the test when MAILROUTE_PEERS is
// not "1". With MAILROUTE_PEERS=1 every variable must be set and every peer
// must answer (the SMTP greeting on both receiver addresses and on
// Postfix's and maddy's submission ports, an MX answer from the DNS
// server, PostgreSQL's answer to an SSLRequest); otherwise the test
// fails: a missing peer is an error, not a reason to skip. The check runs
// once per test binary.
func Require(t testing.TB) Env {
	t.Helper()
	if os.Getenv("MAILROUTE_PEERS") != "1" {
		t.Skip(skipMsg)
	}
	checkOnce.Do(func() {
		checked, checkErr = load(os.Getenv)
		if checkErr == nil {
			checkErr = probe(checked)
		}
	})
	if checkErr != nil {
		t.Fatalf("peertest: MAILROUTE_PEERS=1 but %v\n(start them with: bash internal/peers/peers.sh start; eval \"$(bash internal/peers/peers.sh env)\")", checkErr)
	}
	return checked
}

// load reads the Env from the variables and reports every missing one.
func load(getenv func(string) string) (Env, error) {
	var missing []string
	get := func(name string) string {
		v := getenv(name)
		if v == "" {
			missing = append(missing, name)
		}
		return v
	}
	e := Env{
		DNS:              get("MAILROUTE_DNS"),
		PostfixMaildir:   get("MAILROUTE_POSTFIX_MAILDIR"),
		PostfixCert:      get("MAILROUTE_POSTFIX_CERT"),
		SubmissionAddr:   get("MAILROUTE_SUBMISSION_ADDR"),
		SubmissionsAddr:  get("MAILROUTE_SUBMISSIONS_ADDR"),
		SubmittedMaildir: get("MAILROUTE_SUBMITTED_MAILDIR"),
		SmarthostUser:    get("MAILROUTE_SMARTHOST_USER"),
		SmarthostPass:    get("MAILROUTE_SMARTHOST_PASS"),

		MaddySubmissionAddr:  get("MAILROUTE_MADDY_SUBMISSION_ADDR"),
		MaddySubmissionsAddr: get("MAILROUTE_MADDY_SUBMISSIONS_ADDR"),
		MaddyStore:           get("MAILROUTE_MADDY_STORE"),
		MaddyCert:            get("MAILROUTE_MADDY_CERT"),
		// Checked by probe, so that an Env without it still loads (older
		// `peers.sh env` output) and Require names it when it is missing.
		PostgresURL: getenv("MAILROUTE_POSTGRES_URL"),
		DNSSEC:      getenv("MAILROUTE_DNSSEC_RESOLVER"),
		MaddyUser:   getenv("MAILROUTE_MADDY_USER"),
		MaddyPass:   getenv("MAILROUTE_MADDY_PASS"),
	}
	if e.MaddyUser == "" && e.MaddyPass == "" {
		e.MaddyUser, e.MaddyPass = e.SmarthostUser, e.SmarthostPass
	}
	port := get("MAILROUTE_POSTFIX_PORT")
	if len(missing) > 0 {
		return Env{}, fmt.Errorf("these variables are not set: %s", strings.Join(missing, ", "))
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return Env{}, fmt.Errorf("MAILROUTE_POSTFIX_PORT=%q is not a port", port)
	}
	e.PostfixPort = p
	return e, nil
}

const probeTimeout = 3 * time.Second

// probe checks that every peer answers, and joins one error per silent peer.
func probe(e Env) error {
	var errs []error
	pool, err := loadCert("Postfix", e.PostfixCert)
	if err != nil {
		errs = append(errs, err)
	}
	maddyPool, err := loadCert("maddy", e.MaddyCert)
	if err != nil {
		errs = append(errs, err)
	}
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		if err := greeting(e.PostfixAddr(ip), nil); err != nil {
			errs = append(errs, fmt.Errorf("Postfix receiver: %w", err))
		}
	}
	if err := greeting(e.SubmissionAddr, nil); err != nil {
		errs = append(errs, fmt.Errorf("Postfix submission: %w", err))
	}
	if pool != nil {
		tc := &tls.Config{RootCAs: pool, ServerName: "localhost"}
		if err := greeting(e.SubmissionsAddr, tc); err != nil {
			errs = append(errs, fmt.Errorf("Postfix submissions (implicit TLS): %w", err))
		}
	}
	if err := greeting(e.MaddySubmissionAddr, nil); err != nil {
		errs = append(errs, fmt.Errorf("maddy submission: %w", err))
	}
	if maddyPool != nil {
		tc := &tls.Config{RootCAs: maddyPool, ServerName: "localhost"}
		if err := greeting(e.MaddySubmissionsAddr, tc); err != nil {
			errs = append(errs, fmt.Errorf("maddy submissions (implicit TLS): %w", err))
		}
	}
	if err := dnsProbe(e.DNS); err != nil {
		errs = append(errs, fmt.Errorf("DNS server: %w", err))
	}
	if err := postgresProbe(e.PostgresURL); err != nil {
		errs = append(errs, fmt.Errorf("PostgreSQL: %w", err))
	}
	return errors.Join(errs...)
}

// greeting dials addr (through TLS when tc is set) and expects "220 ".
func greeting(addr string, tc *tls.Config) error {
	d := &net.Dialer{Timeout: probeTimeout}
	var (
		c   net.Conn
		err error
	)
	if tc != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tc)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(probeTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s: reading the greeting: %w", addr, err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("%s: greeting %q, want 220", addr, strings.TrimSpace(line))
	}
	fmt.Fprintf(c, "QUIT\r\n")
	return nil
}

// dnsProbe asks server for the MX of example.org.
func dnsProbe(server string) error {
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeMX)
	c := &dns.Client{Timeout: probeTimeout}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return fmt.Errorf("%s: MX example.org: %w", server, err)
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		return fmt.Errorf("%s: MX example.org: rcode %s, %d answers; is it the peers' DNS server?",
			server, dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	return nil
}

// postgresProbe checks that the server of a postgres:// URL accepts a
// connection and answers an SSLRequest ('S' or 'N'), the first message of
// PostgreSQL's protocol, without a driver.
func postgresProbe(rawURL string) error {
	if rawURL == "" {
		return fmt.Errorf("MAILROUTE_POSTGRES_URL is not set (internal/peers/postgres.sh; `peers.sh env` prints it)")
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return fmt.Errorf("MAILROUTE_POSTGRES_URL=%q is not a postgres://host:port/db URL", rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "5432")
	}
	c, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(probeTimeout))
	// Length 8, request code 80877103.
	if _, err := c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("%s: no answer to SSLRequest: %w", addr, err)
	}
	if b[0] != 'S' && b[0] != 'N' {
		return fmt.Errorf("%s: answer %q to SSLRequest; is it PostgreSQL?", addr, b)
	}
	return nil
}

// loadCert reads the PEM certificate of the peer called who.
func loadCert(who, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s certificate: %w", who, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s certificate: %s holds no PEM certificate", who, path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s certificate %s: %w", who, path, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
}
