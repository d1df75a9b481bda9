package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"time"
)

// FetchTimeout bounds one policy fetch. RFC 8461 §3.3 suggests senders
// time out after a minute at most; a policy host that slow is rare, and a
// delivery waits for it only when no cached policy exists.
const FetchTimeout = 60 * time.Second

// Result types of RFC 8460 §4.3.2 that a failed fetch maps to.
const (
	ResultFetchError    = "sts-policy-fetch-error"
	ResultPolicyInvalid = "sts-policy-invalid"
	ResultWebPKIInvalid = "sts-webpki-invalid"
)

// FetchError is a policy that could not be had, with the TLS-RPT result
// type that describes why.
type FetchError struct {
	Domain     string
	ResultType string // ResultFetchError, ResultPolicyInvalid or ResultWebPKIInvalid
	Err        error
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("MTA-STS policy of %s: %v", e.Domain, e.Err)
}

func (e *FetchError) Unwrap() error { return e.Err }

// NewClient returns the HTTP client for policy fetches: HTTPS only,
// certificates verified against roots (nil: the system's), no redirects
// (RFC 8461 §3.3), no proxy from the environment, and connections made by
// dial when it is set (a resolver and port of the caller's choosing).
func NewClient(roots *x509.CertPool, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DialContext:           dial,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   FetchTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("MTA-STS policy hosts must not redirect (RFC 8461 §3.3)")
		},
	}
}

// Fetch gets and parses https://mta-sts.<domain>/.well-known/mta-sts.txt.
// Only a 200 answer with a text/plain body of at most MaxPolicySize is a
// policy.
func Fetch(ctx context.Context, client *http.Client, domain string) (*Policy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, &FetchError{Domain: domain, ResultType: ResultFetchError, Err: err}
	}
	resp, err := client.Do(req)
	if err != nil {
		rt := ResultFetchError
		var ve *tls.CertificateVerificationError
		var ue x509.UnknownAuthorityError
		var he x509.HostnameError
		var ie x509.CertificateInvalidError
		if errors.As(err, &ve) || errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ie) {
			rt = ResultWebPKIInvalid
		}
		return nil, &FetchError{Domain: domain, ResultType: rt, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &FetchError{Domain: domain, ResultType: ResultFetchError, Err: fmt.Errorf("%s answered %s", url, resp.Status)}
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, &FetchError{Domain: domain, ResultType: ResultPolicyInvalid, Err: fmt.Errorf("%s is %q, not text/plain", url, resp.Header.Get("Content-Type"))}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return nil, &FetchError{Domain: domain, ResultType: ResultFetchError, Err: err}
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, &FetchError{Domain: domain, ResultType: ResultPolicyInvalid, Err: err}
	}
	return p, nil
}
