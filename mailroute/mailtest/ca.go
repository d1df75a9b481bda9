package mailtest

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/mailroute/go-mailroute/internal/testpki"
)

// CA is a throwaway certificate authority: its root lives in memory only,
// for a week, so that TLS in tests is verified as it is in production,
// against a root the test controls.
type CA struct {
	ca *testpki.CA
}

// NewCA makes a fresh CA (ECDSA P-256: microseconds).
func NewCA() (*CA, error) {
	ca, err := testpki.NewCA()
	if err != nil {
		return nil, err
	}
	return &CA{ca: ca}, nil
}

// ServerConfig returns a server configuration whose certificate the CA
// issued for names: host names and IP addresses, such as "127.0.0.1" for
// a relay reached by address.
func (c *CA) ServerConfig(names ...string) *tls.Config { return c.ca.ServerConfig(names...) }

// ClientConfig returns a client configuration that trusts this CA only,
// for Relay.TLSConfig and DirectOptions.TLSConfig. The server name comes
// from the address dialled.
func (c *CA) ClientConfig() *tls.Config { return &tls.Config{RootCAs: c.ca.Pool()} }

// Pool returns a pool holding only the CA's root.
func (c *CA) Pool() *x509.CertPool { return c.ca.Pool() }

// Certificate issues a certificate for names, for servers of one's own.
func (c *CA) Certificate(names ...string) tls.Certificate { return c.ca.Issue(names...) }
