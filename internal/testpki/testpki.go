// Package testpki is a throwaway certificate authority for tests.
//
// A test makes a CA with [New], issues leaf certificates for the names its
// servers answer to with [CA.Issue], and gives clients [CA.ClientConfig] (or
// [CA.Pool]) so that verification succeeds exactly as it would against a real
// CA. [CA.IssueExpired] and [SelfSigned] give the two failures TLS policy
// tests need most: "certificate has expired" and "signed by unknown
// authority".
//
// Nothing is cached between CAs: each test gets its own root, so a
// certificate from one test can never verify in another. Keys are ECDSA
// P-256, which takes microseconds to generate.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"
)

// CA is an in-memory root certificate authority. Its methods are safe for
// concurrent use: the CA is never modified after [NewCA] returns.
type CA struct {
	// Cert is the self-signed root certificate.
	Cert *x509.Certificate
	// Key is the root's private key.
	Key *ecdsa.PrivateKey
}

// New returns a fresh CA, failing the test if one cannot be made.
func New(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA()
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return ca
}

// NewCA returns a fresh root CA valid from an hour ago for a week (longer
// than any test runs, short enough that a leaked key is worthless).
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The serial in the name tells apart the roots of different tests
		// in error messages.
		Subject:               pkix.Name{Organization: []string{"mailroute tests"}, CommonName: "testpki root " + serial.Text(16)[:8]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue returns a leaf certificate signed by the CA for names, valid from an
// hour ago (a NotBefore of "now" can be in the future of a coarse clock) until
// a day from now. Each name
// that parses as an IP address becomes an IP SAN, every other one a DNS SAN.
// The certificate is good for both server and client authentication.
//
// Issue panics if the certificate cannot be made, which only happens when the
// system's random source fails.
func (ca *CA) Issue(names ...string) tls.Certificate {
	now := time.Now()
	return ca.IssueWindow(now.Add(-time.Hour), now.Add(24*time.Hour), names...)
}

// IssueExpired is [CA.Issue] for a certificate that expired an hour ago, so
// verification fails with x509's "certificate has expired".
func (ca *CA) IssueExpired(names ...string) tls.Certificate {
	now := time.Now()
	return ca.IssueWindow(now.Add(-48*time.Hour), now.Add(-time.Hour), names...)
}

// IssueWindow is [CA.Issue] with an explicit validity period, for
// not-yet-valid certificates and expiry edge cases.
func (ca *CA) IssueWindow(notBefore, notAfter time.Time, names ...string) tls.Certificate {
	cert, err := issue(ca.Cert, ca.Key, notBefore, notAfter, names)
	if err != nil {
		panic("testpki: " + err.Error())
	}
	return cert
}

// Pool returns a new pool holding only the CA's root. Each call returns a
// distinct pool, so a test that adds to it cannot affect another.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// ClientConfig returns a client configuration that trusts only this CA and
// verifies the server's certificate against serverName.
func (ca *CA) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		RootCAs:    ca.Pool(),
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
	}
}

// ServerConfig returns a server configuration presenting a fresh leaf
// certificate for names. With no names it covers "localhost", "127.0.0.1"
// and "::1", the names a loopback test server is reached by.
func (ca *CA) ServerConfig(names ...string) *tls.Config {
	if len(names) == 0 {
		names = []string{"localhost", "127.0.0.1", "::1"}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(names...)},
		MinVersion:   tls.VersionTLS12,
	}
}

// CertPEM returns the root certificate PEM-encoded, for tests that hand the
// CA to a program outside the process (a Postfix peer, SSL_CERT_FILE).
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// SelfSigned returns a certificate for names that is its own issuer, so
// verification against any pool fails with "certificate signed by unknown
// authority" while the names still match. It panics like [CA.Issue].
func SelfSigned(names ...string) tls.Certificate {
	now := time.Now()
	cert, err := issue(nil, nil, now.Add(-time.Hour), now.Add(24*time.Hour), names)
	if err != nil {
		panic("testpki: " + err.Error())
	}
	return cert
}

// EncodePEM returns the certificate chain and private key of cert
// PEM-encoded, the form servers outside the process read from files.
func EncodePEM(cert tls.Certificate) (certPEM, keyPEM []byte, err error) {
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("testpki: encoding key: %w", err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// issue makes a leaf for names signed by parent and parentKey, or
// self-signed when parent is nil.
func issue(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, notBefore, notAfter time.Time, names []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating leaf key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		// Verification reads only the SANs; the common name is for people
		// reading a failing test's output.
		BasicConstraintsValid: true,
	}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	for _, name := range names {
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating leaf certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parsing leaf certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// randomSerial returns a random positive 127-bit serial number; RFC 5280
// allows up to 20 octets and randomness keeps serials unique without state.
func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}
