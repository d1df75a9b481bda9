package mailroute

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mailroute/go-mailroute/internal/dnsname"
)

// FuzzRoute: whatever the input, routing by domain patterns never panics,
// never touches DNS, either refuses the input as an invalid domain or
// decides, and the compiled router agrees with the plain Rules and with the
// patterns' label-by-label meaning.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{"gmail.com", "x@GMAIL.com.", "notgmail.com", "a.example.com", "example.com", "xexample.com", "Bücher.example.com", "[1.2.3.4]", "a..b", "x@y@z"} {
		f.Add(s)
	}
	rules := Rules{
		{Domains: []string{"gmail.com"}, Via: Relayed},
		{Domains: []string{".example.com"}, Via: Relayed},
		{Domains: []string{"*"}, Via: Direct},
	}
	m, err := New(Config{Hostname: "mail.sender.test", Router: rules, Resolver: failingResolver{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := m.Route(context.Background(), in)
		if err != nil {
			if !errors.Is(err, dnsname.ErrInvalid) {
				t.Fatalf("Route(%q): %v is not an invalid-domain error", in, err)
			}
			return
		}
		domain := in[strings.LastIndexByte(in, '@')+1:]
		if _, lit, _ := dnsname.ParseLiteral(domain); lit {
			if r.Via != Direct {
				t.Fatalf("literal %q routed %v", in, r.Via)
			}
			return
		}
		norm, err := dnsname.Normalize(domain)
		if err != nil {
			t.Fatalf("Route accepted %q but Normalize refuses it: %v", in, err)
		}
		want := Direct
		if norm == "gmail.com" || dnsname.HasSuffix(norm, "example.com") {
			want = Relayed
		}
		if r.Via != want {
			t.Fatalf("Route(%q) = %v (%s), want %v", in, r.Via, r.Reason, want)
		}
		d, _ := m.destination(domain)
		plain, err := rules.Route(context.Background(), d)
		if err != nil || plain != r {
			t.Fatalf("plain Rules disagree on %q: %+v, %v vs %+v", in, plain, err, r)
		}
	})
}

// failingResolver fails the test's expectations loudly if anything asks it.
type failingResolver struct{ Resolver }
