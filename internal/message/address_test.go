package message

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailroute/go-mailroute/internal/dnsname"
)

func TestParseAddress(t *testing.T) {
	local64 := strings.Repeat("a", 64)
	label63 := strings.Repeat("b", 63)
	// 64 + 1 + 187 + 2 = 254: under the path limit; one more label passes it.
	domain187 := label63 + "." + label63 + "." + strings.Repeat("c", 59)
	tests := []struct {
		in     string
		local  string
		domain string
		utf8   bool
		lit    string // Literal, when the domain is an address literal
		bad    string // substring of the error; "" = must succeed
	}{
		// Valid.
		{in: "user@example.com", local: "user", domain: "example.com"},
		{in: "User.Name+tag@Example.COM", local: "User.Name+tag", domain: "example.com"},
		{in: "<a@b.example>", local: "a", domain: "b.example"},
		{in: "a@example.com.", local: "a", domain: "example.com"},
		{in: "!#$%&'*+-/=?^_`{|}~@example.com", local: "!#$%&'*+-/=?^_`{|}~", domain: "example.com"},
		{in: "a.b.c@example.com", local: "a.b.c", domain: "example.com"},
		{in: `"a b"@c.example`, local: `"a b"`, domain: "c.example"},
		{in: `"a\"b"@c.example`, local: `"a\"b"`, domain: "c.example"},
		{in: `"a\\b"@c.example`, local: `"a\\b"`, domain: "c.example"},
		{in: `"a@b"@c.example`, local: `"a@b"`, domain: "c.example"},
		{in: `".a..b."@c.example`, local: `".a..b."`, domain: "c.example"},
		{in: `"ü x"@c.example`, local: `"ü x"`, domain: "c.example", utf8: true},
		{in: "a@[192.0.2.1]", local: "a", domain: "[192.0.2.1]", lit: "192.0.2.1"},
		{in: "a@[IPv6:::1]", local: "a", domain: "[IPv6:::1]", lit: "::1"},
		{in: "a@[ipv6:2001:DB8::1]", local: "a", domain: "[IPv6:2001:db8::1]", lit: "2001:db8::1"},
		{in: "ü@bücher.example", local: "ü", domain: "xn--bcher-kva.example", utf8: true},
		{in: "a@bücher.example", local: "a", domain: "xn--bcher-kva.example"},
		{in: "用户@例子.广告", local: "用户", domain: "xn--fsqu00a.xn--4rr70v", utf8: true},
		{in: local64 + "@example.com", local: local64, domain: "example.com"},
		{in: local64 + "@" + domain187, local: local64, domain: domain187},

		// Smuggling and injection.
		{in: "a@b> SIZE=1", bad: "'<' or '>'"},
		{in: "a@b\r\nRCPT TO:<c@d>", bad: "line break"},
		{in: "a@b\nx", bad: "line break"},
		{in: "a@b\rx", bad: "line break"},
		{in: "a@b\x00", bad: "NUL"},
		{in: "a\t@b.example", bad: "control character 0x09"},
		{in: "a\x7f@b.example", bad: "control character 0x7f"},
		{in: "a\u0085@b.example", bad: "control"},
		{in: `"a` + "\u0085" + `"@b.example`, bad: "control"},
		{in: "<<a@b>>", bad: "'<' or '>'"},
		{in: "<a@b", bad: "'<' or '>'"},
		{in: "a@b>", bad: "'<' or '>'"},
		{in: `"a>b"@c.example`, bad: "'<' or '>'"},
		{in: "<>", bad: "null reverse-path"},
		{in: "a b@c", bad: "space outside"},
		{in: "a@b c", bad: "space outside"},
		{in: " a@b", bad: "space outside"},
		{in: "a@b.example ", bad: "space outside"},
		{in: "a\u00a0b@c.example", bad: "space"},

		// Shape.
		{in: "", bad: "empty"},
		{in: "ab", bad: "no '@'"},
		{in: "@example.com", bad: "empty local part"},
		{in: "@relay.example:a@b.example", bad: "source route"},
		{in: "a@", bad: "empty domain"},
		{in: `""@example.com`, bad: "empty local part"},
		{in: "a@b@c.example", bad: "'@'"},
		{in: ".a@example.com", bad: "starts with a dot"},
		{in: "a.@example.com", bad: "ends with a dot"},
		{in: "a..b@example.com", bad: "two dots"},
		{in: "a(b)@example.com", bad: "'('"},
		{in: `a"b@example.com`, bad: `'"'`},
		{in: `a\b@example.com`, bad: `'\\'`},
		{in: `"a"b"@c.example`, bad: "followed by '@'"},
		{in: `"ab@c.example`, bad: "no closing"},
		{in: `"a\"@c.example`, bad: "no closing"},
		{in: `"a\`, bad: "no closing"},
		{in: `"a\ü"@c.example`, bad: "printable ASCII"},
		{in: `"a"`, bad: "no '@'"},
		{in: "\xff@example.com", bad: "UTF-8"},
		{in: "a@exa_mple.com", bad: "invalid domain"},
		{in: "a@-example.com", bad: "hyphen"},
		{in: "a@example..com", bad: "empty label"},
		{in: "a@192.0.2.1", bad: "address literal"},
		{in: "a@192.0.2.1.", bad: "address literal"},
		{in: "a@１９２.０.２.１", bad: "address literal"},
		{in: "a@1.2.3", local: "a", domain: "1.2.3"},
		{in: "a@[192.0.2.1", bad: "closing ']'"},
		{in: "a@[2001:db8::1]", bad: "IPv6:"},
		{in: "a@[IPv6:192.0.2.1]", bad: "IPv6: tag"},
		{in: "a@[example.com]", bad: "not an IPv4 or IPv6"},
		{in: local64 + "a@example.com", bad: "65 octets"},
		{in: local64 + "@" + label63 + "." + domain187, bad: "path is 318 octets"},
		{in: strings.Repeat("a", 2000) + "@example.com", bad: "2012 octets"},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tt := range tests {
		a, err := ParseAddress(tt.in)
		if tt.bad == "" {
			if err != nil {
				t.Errorf("ParseAddress(%q): %v", tt.in, err)
				continue
			}
			want := Address{Local: tt.local, Domain: tt.domain, UTF8: tt.utf8}
			if tt.lit != "" {
				want.Literal = netip.MustParseAddr(tt.lit)
			}
			if a != want {
				t.Errorf("ParseAddress(%q) = %+v, want %+v", tt.in, a, want)
			}
			if got := a.String(); got != tt.local+"@"+tt.domain {
				t.Errorf("ParseAddress(%q).String() = %q", tt.in, got)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseAddress(%q) = %+v, want an error mentioning %q", tt.in, a, tt.bad)
			continue
		}
		var ae *AddressError
		if !errors.As(err, &ae) || ae.Input != tt.in {
			t.Errorf("ParseAddress(%q): error %v is not an *AddressError naming the input", tt.in, err)
		}
		if !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("ParseAddress(%q): error %v does not wrap ErrInvalidAddress", tt.in, err)
		}
		if !strings.Contains(err.Error(), tt.bad) {
			t.Errorf("ParseAddress(%q): error %q does not mention %q", tt.in, err, tt.bad)
		}
		if a != (Address{}) {
			t.Errorf("ParseAddress(%q) returned %+v with its error", tt.in, a)
		}
	}
}

func TestParseAddressDomainErrorWrapsDNSName(t *testing.T) {
	_, err := ParseAddress("a@exa_mple.com")
	if !errors.Is(err, dnsname.ErrInvalid) || !errors.Is(err, ErrInvalidAddress) {
		t.Fatalf("error %v should wrap both ErrInvalidAddress and dnsname.ErrInvalid", err)
	}
}

func TestAddressErrorTruncatesInput(t *testing.T) {
	in := strings.Repeat("x", 5000)
	_, err := ParseAddress(in)
	if err == nil || len(err.Error()) > 2*maxQuotedInput {
		t.Fatalf("error for a 5000-octet input is %d octets long", len(err.Error()))
	}
}

func TestParseReversePath(t *testing.T) {
	for _, in := range []string{"", "<>"} {
		a, null, err := ParseReversePath(in)
		if err != nil || !null || a != (Address{}) || a.String() != "" {
			t.Errorf("ParseReversePath(%q) = %+v, %v, %v; want the null path", in, a, null, err)
		}
	}
	a, null, err := ParseReversePath("<Bounce@Example.com>")
	if err != nil || null || a.String() != "Bounce@example.com" {
		t.Errorf("ParseReversePath(<Bounce@Example.com>) = %+v, %v, %v", a, null, err)
	}
	for _, in := range []string{"<", "< >", "<<>>", " ", "a@b> SIZE=1"} {
		if _, null, err := ParseReversePath(in); err == nil || null {
			t.Errorf("ParseReversePath(%q) = null %v, %v; want an error", in, null, err)
		}
	}
}

func TestParseAddressCanonicalDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseAddress("user.name@mail.example.com"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ParseAddress of a canonical address allocated %v times", allocs)
	}
}

// outsideQuotes is s without its leading quoted-string, if it has one.
func outsideQuotes(s string) string {
	if !strings.HasPrefix(s, `"`) {
		return s
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return s[i+1:]
		}
	}
	return ""
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"user@example.com", "<a@b.example>", `"a b"@c`, `"a\"b"@c`, `"a@b"@c`,
		"a@[192.0.2.1]", "a@[IPv6:::1]", "ü@bücher.example", "a@b> SIZE=1",
		"a@b\r\nRCPT TO:<c@d>", "a@b\x00", "@r:a@b", "a@192.0.2.1", "<>", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAddress) {
				t.Fatalf("ParseAddress(%q): error %v does not wrap ErrInvalidAddress", s, err)
			}
			return
		}
		w := a.String()
		if strings.ContainsAny(w, "\r\n\x00<>") {
			t.Fatalf("ParseAddress(%q).String() = %q holds CR, LF, NUL, '<' or '>'", s, w)
		}
		if strings.Contains(outsideQuotes(w), " ") {
			t.Fatalf("ParseAddress(%q).String() = %q holds a space outside quotes", s, w)
		}
		if len(w)+2 > MaxPath || len(a.Local) > MaxLocalPart {
			t.Fatalf("ParseAddress(%q).String() = %q is too long", s, w)
		}
		b, err := ParseAddress(w)
		if err != nil {
			t.Fatalf("ParseAddress(%q) = %q, which does not parse again: %v", s, w, err)
		}
		if a != b {
			t.Fatalf("ParseAddress(%q) = %+v, but its String %q parses to %+v", s, a, w, b)
		}
	})
}

// StringFrom gives what String gives, and the input itself (no allocation)
// when the input is already in that form.
func TestAddressStringFrom(t *testing.T) {
	for _, in := range []string{
		"user@example.com", "<user@example.com>", "User@EXAMPLE.com", "user@example.com.",
		`"a b"@example.com`, "u@[192.0.2.1]", "u@[IPv6:2001:db8::1]", "u@bücher.example", "ü@example.com",
	} {
		a, err := ParseAddress(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got, want := a.StringFrom(in), a.String(); got != want {
			t.Errorf("StringFrom(%q) = %q, String() = %q", in, got, want)
		}
	}
	a, _ := ParseAddress("<user@example.com>")
	if n := testing.AllocsPerRun(10, func() { _ = a.StringFrom("<user@example.com>") }); n != 0 {
		t.Errorf("StringFrom of a canonical input: %v allocations, want 0", n)
	}
	a, _ = ParseAddress("user@EXAMPLE.com")
	if got := a.StringFrom("other@example.com"); got != "user@example.com" {
		t.Errorf("StringFrom of another input = %q", got)
	}
}
