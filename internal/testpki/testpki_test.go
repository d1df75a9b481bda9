package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func verify(t *testing.T, pool *x509.CertPool, cert tls.Certificate, name string) error {
	t.Helper()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool})
	return err
}

func TestIssueVerifiesForEachName(t *testing.T) {
	ca := New(t)
	cert := ca.Issue("mx.test", "127.0.0.1", "::1", "smtp.example.org")
	for _, name := range []string{"mx.test", "127.0.0.1", "::1", "smtp.example.org"} {
		if err := verify(t, ca.Pool(), cert, name); err != nil {
			t.Errorf("verify %q: %v", name, err)
		}
	}
	if err := verify(t, ca.Pool(), cert, "other.test"); err == nil {
		t.Error("verified for a name not in the certificate")
	}
	if got := cert.Leaf.DNSNames; len(got) != 2 || got[0] != "mx.test" || got[1] != "smtp.example.org" {
		t.Errorf("DNSNames = %q", got)
	}
	if got := cert.Leaf.IPAddresses; len(got) != 2 || !got[0].Equal(net.IPv4(127, 0, 0, 1)) || !got[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v", got)
	}
	if now := time.Now(); cert.Leaf.NotBefore.After(now) || cert.Leaf.NotAfter.Before(now.Add(23*time.Hour)) {
		t.Errorf("validity %v..%v does not cover now..now+23h", cert.Leaf.NotBefore, cert.Leaf.NotAfter)
	}
}

func TestIssueExpired(t *testing.T) {
	ca := New(t)
	err := verify(t, ca.Pool(), ca.IssueExpired("mx.test"), "mx.test")
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("err = %v, want an x509.Expired CertificateInvalidError", err)
	}
}

func TestSelfSignedIsUnknownAuthority(t *testing.T) {
	ca := New(t)
	err := verify(t, ca.Pool(), SelfSigned("mx.test"), "mx.test")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("err = %v, want x509.UnknownAuthorityError", err)
	}
}

func TestCAsDoNotTrustEachOther(t *testing.T) {
	a, b := New(t), New(t)
	if err := verify(t, b.Pool(), a.Issue("mx.test"), "mx.test"); err == nil {
		t.Fatal("a certificate from one CA verified against another")
	}
}

func TestPoolIsACopy(t *testing.T) {
	ca := New(t)
	p := ca.Pool()
	p.AddCert(New(t).Cert)
	if ca.Pool().Equal(p) {
		t.Fatal("adding to a returned pool changed the CA's pool")
	}
}

// serveHello accepts TLS connections on a loopback listener with cfg and
// writes "hello" on each, until the test ends.
func serveHello(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello") // fails when the client rejects the handshake
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestHandshake runs real TLS handshakes over loopback with the two configs.
func TestHandshake(t *testing.T) {
	ca := New(t)
	addr := serveHello(t, ca.ServerConfig())
	for _, name := range []string{"localhost", "127.0.0.1"} {
		c, err := tls.Dial("tcp", addr, ca.ClientConfig(name))
		if err != nil {
			t.Fatalf("dial verifying %q: %v", name, err)
		}
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != "hello" {
			t.Fatalf("read %q, %v", b, err)
		}
	}
}

func TestClientConfigRejectsWrongName(t *testing.T) {
	ca := New(t)
	addr := serveHello(t, ca.ServerConfig("mx.test"))
	_, err := tls.Dial("tcp", addr, ca.ClientConfig("other.test"))
	var hostname x509.HostnameError
	if !errors.As(err, &hostname) {
		t.Fatalf("err = %v, want x509.HostnameError", err)
	}
}

func TestPEM(t *testing.T) {
	ca := New(t)
	if b, _ := pem.Decode(ca.CertPEM()); b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("CertPEM does not decode: %q", ca.CertPEM())
	}
	certPEM, keyPEM, err := EncodePEM(ca.Issue("mx.test"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(keyPEM), "PRIVATE KEY") {
		t.Fatalf("key PEM: %q", keyPEM)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("X509KeyPair: %v", err)
	}
	if err := verify(t, ca.Pool(), pair, "mx.test"); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkIssue(b *testing.B) {
	ca, err := NewCA()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		ca.Issue("mx.test")
	}
}
