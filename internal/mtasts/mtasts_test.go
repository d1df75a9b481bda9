package mtasts

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mailroute/go-mailroute/internal/testpki"
)

func TestParseRecord(t *testing.T) {
	for _, tt := range []struct {
		txt, id string
		ok      bool
	}{
		{"v=STSv1; id=20240101T000000;", "20240101T000000", true},
		{"v=STSv1;id=abc", "abc", true},
		{"v=STSv1; id=abc; ext=1", "abc", true},
		{"v=STSv1; id=", "", false},
		{"v=STSv1; id=a-b", "", false},
		{"v=STSv1; id=" + strings.Repeat("a", 33), "", false},
		{"id=abc; v=STSv1", "", false},
		{"v=STSv2; id=abc", "", false},
		{"v=STSv1; id=a; id=b", "", false},
		{"v=STSv1", "", false},
		{"v=STSv1;; id=a", "", false},
	} {
		id, err := ParseRecord(tt.txt)
		if (err == nil) != tt.ok || id != tt.id {
			t.Errorf("ParseRecord(%q) = %q, %v; want %q ok=%v", tt.txt, id, err, tt.id, tt.ok)
		}
	}
	if _, err := SelectRecord([]string{"v=spf1 -all", "v=STSv1; id=1", "v=STSv1; id=2"}); !errors.Is(err, ErrNoRecord) {
		t.Errorf("two records: %v, want ErrNoRecord", err)
	}
	if id, err := SelectRecord([]string{"v=spf1 -all", "v=STSv1; id=7"}); err != nil || id != "7" {
		t.Errorf("one record among others: %q, %v", id, err)
	}
}

func TestParsePolicy(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     *Policy
	}{
		{"crlf", "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
			&Policy{Mode: Enforce, MX: []string{"mx1.example.com", "*.example.net"}, MaxAge: 86400}},
		{"lf and case", "version: STSv1\nmode: testing\nmx: MX.Example.COM.\nmax_age: 5\n",
			&Policy{Mode: Testing, MX: []string{"mx.example.com"}, MaxAge: 5}},
		{"none needs no mx", "version: STSv1\nmode: none\nmax_age: 0\n", &Policy{Mode: None, MaxAge: 0}},
		{"unknown keys ignored", "version: STSv1\nmode: enforce\nfoo: bar\nmx: a.b\nmax_age: 1\n", &Policy{Mode: Enforce, MX: []string{"a.b"}, MaxAge: 1}},
		{"max_age capped", "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 99999999999\n", nil},
		{"max_age over a year capped", "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 40000000\n", &Policy{Mode: Enforce, MX: []string{"a.b"}, MaxAge: MaxAgeLimit}},
		{"version not first", "mode: enforce\nversion: STSv1\nmx: a.b\nmax_age: 1\n", nil},
		{"no mode", "version: STSv1\nmx: a.b\nmax_age: 1\n", nil},
		{"bad mode", "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n", nil},
		{"two modes", "version: STSv1\nmode: enforce\nmode: testing\nmx: a.b\nmax_age: 1\n", nil},
		{"no max_age", "version: STSv1\nmode: enforce\nmx: a.b\n", nil},
		{"negative max_age", "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", nil},
		{"no mx", "version: STSv1\nmode: enforce\nmax_age: 1\n", nil},
		{"wildcard of a tld", "version: STSv1\nmode: enforce\nmx: *.com\nmax_age: 1\n", nil},
		{"inner wildcard", "version: STSv1\nmode: enforce\nmx: a.*.com\nmax_age: 1\n", nil},
		{"no colon", "version: STSv1\nmode enforce\n", nil},
		{"too big", "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 1\n" + strings.Repeat("x: y\n", MaxPolicySize/5+1), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tt.in))
			if tt.want == nil {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Mode != tt.want.Mode || p.MaxAge != tt.want.MaxAge || strings.Join(p.MX, ",") != strings.Join(tt.want.MX, ",") {
				t.Errorf("got %+v, want %+v", p, tt.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	p := &Policy{Mode: Enforce, MX: []string{"mx.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mx.example.com":      true,
		"MX.EXAMPLE.COM.":     true,
		"mx2.example.com":     false,
		"a.example.net":       true,
		"a.b.example.net":     false, // the wildcard covers one label only
		"example.net":         false,
		"evilexample.net":     false,
		"mx.example.com.evil": false,
	} {
		if got := p.Match(host); got != want {
			t.Errorf("Match(%q) = %v, want %v", host, got, want)
		}
	}
}

// policyServer serves a policy over HTTPS with a certificate of ca for
// mta-sts.<domain>, and returns a client whose connections all go to it.
func policyServer(t *testing.T, ca *testpki.CA, names []string, h http.HandlerFunc) *http.Client {
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = ca.ServerConfig(names...)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	return NewClient(ca.Pool(), func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	})
}

func TestFetch(t *testing.T) {
	ca := testpki.New(t)
	good := "version: STSv1\r\nmode: enforce\r\nmx: mx.dest.test\r\nmax_age: 600\r\n"
	for _, tt := range []struct {
		name       string
		certNames  []string
		handler    http.HandlerFunc
		resultType string // "" = success
	}{
		{"ok", []string{"mta-sts.dest.test"}, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/.well-known/mta-sts.txt" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte(good))
		}, ""},
		{"not found", []string{"mta-sts.dest.test"}, http.NotFound, ResultFetchError},
		{"redirect", []string{"mta-sts.dest.test"}, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://mta-sts.dest.test/other.txt", http.StatusFound)
		}, ResultFetchError},
		{"html", []string{"mta-sts.dest.test"}, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(good))
		}, ResultPolicyInvalid},
		{"invalid policy", []string{"mta-sts.dest.test"}, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte("version: STSv1\r\nmode: enforce\r\n"))
		}, ResultPolicyInvalid},
		{"too big", []string{"mta-sts.dest.test"}, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(good + strings.Repeat("x: y\r\n", MaxPolicySize/6+1)))
		}, ResultPolicyInvalid},
		{"certificate for another name", []string{"www.dest.test"}, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(good))
		}, ResultWebPKIInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := policyServer(t, ca, tt.certNames, tt.handler)
			p, err := Fetch(context.Background(), c, "dest.test")
			if tt.resultType == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p.Mode != Enforce || !p.Match("mx.dest.test") || p.MaxAge != 600 {
					t.Errorf("policy %+v", p)
				}
				return
			}
			var fe *FetchError
			if !errors.As(err, &fe) || fe.ResultType != tt.resultType {
				t.Fatalf("err %v, want a FetchError of type %s", err, tt.resultType)
			}
		})
	}
	// An untrusted CA is a web PKI failure too.
	other := testpki.New(t)
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = other.ServerConfig("mta-sts.dest.test")
	srv.StartTLS()
	defer srv.Close()
	c := NewClient(ca.Pool(), func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, srv.Listener.Addr().String())
	})
	var fe *FetchError
	if _, err := Fetch(context.Background(), c, "dest.test"); !errors.As(err, &fe) || fe.ResultType != ResultWebPKIInvalid {
		t.Errorf("untrusted CA: %v", err)
	}
}
