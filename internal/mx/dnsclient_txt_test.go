package mx

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
)

func TestLookupTXT(t *testing.T) {
	s, r := startDNS(t)
	long := strings.Repeat("A", 300)
	s.Add(
		`spf.test. TXT "v=spf1 ip4:192.0.2.1 -all"`,
		`spf.test. TXT "google-site-verification=x"`,
		// One record of two strings, as a 2048-bit DKIM key is published.
		`sel._domainkey.spf.test. TXT "v=DKIM1; k=rsa; p=`+long[:200]+`" "`+long[200:]+`"`,
	)
	ctx := context.Background()
	got, err := r.LookupTXT(ctx, "spf.test")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"google-site-verification=x", "v=spf1 ip4:192.0.2.1 -all"}; !slices.Equal(got, want) {
		t.Errorf("TXT spf.test = %q, want %q", got, want)
	}
	got, err = r.LookupTXT(ctx, "sel._domainkey.spf.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "v=DKIM1; k=rsa; p="+long {
		t.Errorf("multi-string TXT not joined into one record: %q", got)
	}

	// NODATA and NXDOMAIN are both "not found"; SERVFAIL is temporary.
	for name, want := range map[string]func(*net.DNSError) bool{
		"multi.test":      func(e *net.DNSError) bool { return e.IsNotFound && !errors.Is(e, ErrNXDOMAIN) },
		"nowhere.test":    func(e *net.DNSError) bool { return e.IsNotFound && errors.Is(e, ErrNXDOMAIN) },
		"x.servfail.test": func(e *net.DNSError) bool { return e.IsTemporary && !e.IsNotFound },
	} {
		_, err := r.LookupTXT(ctx, name)
		var de *net.DNSError
		if !errors.As(err, &de) || !want(de) {
			t.Errorf("TXT %s: error %#v", name, err)
		}
	}
}

func TestLookupAddr(t *testing.T) {
	s, r := startDNS(t)
	s.Add(
		"1.2.0.192.in-addr.arpa. PTR mail.example.net.",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR Mail6.Example.NET.",
	)
	ctx := context.Background()
	for addr, want := range map[string]string{
		"192.0.2.1":   "mail.example.net.",
		"2001:db8::1": "Mail6.Example.NET.",
	} {
		got, err := r.LookupAddr(ctx, addr)
		if err != nil || len(got) != 1 || !strings.EqualFold(got[0], want) {
			t.Errorf("PTR %s = %q, %v; want %q", addr, got, err, want)
		}
	}
	_, err := r.LookupAddr(ctx, "192.0.2.99")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("PTR of an address without one: %v", err)
	}
	if _, err := r.LookupAddr(ctx, "not-an-ip"); err == nil {
		t.Error("PTR of a non-address: no error")
	}
}

// *net.Resolver and ServerResolver answer the same questions: the doctor
// and the SPF library take either.
var _ interface {
	LookupTXT(context.Context, string) ([]string, error)
	LookupAddr(context.Context, string) ([]string, error)
	LookupMX(context.Context, string) ([]*net.MX, error)
	LookupIPAddr(context.Context, string) ([]net.IPAddr, error)
} = (*ServerResolver)(nil)
