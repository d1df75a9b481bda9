package dnsname

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		in, want string
		bad      string // substring of the error; "" = must succeed
	}{
		{in: "example.com", want: "example.com"},
		{in: "Example.COM", want: "example.com"},
		{in: "example.com.", want: "example.com"},
		{in: "MAIL.Example.com.", want: "mail.example.com"},
		{in: "bücher.example", want: "xn--bcher-kva.example"},
		{in: "BÜCHER.example", want: "xn--bcher-kva.example"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "例え.テスト", want: "xn--r8jz45g.xn--zckzah"},
		{in: "a-b.c", want: "a-b.c"},
		{in: "123.example", want: "123.example"},
		{in: long63 + ".com", want: long63 + ".com"},
		{in: "", bad: "empty"},
		{in: ".", bad: "empty"},
		{in: "a..b", bad: "empty label"},
		{in: ".example.com", bad: "empty label"},
		{in: "example.com..", bad: "empty label"},
		{in: long63 + "a.com", bad: "label"},
		{in: strings.Repeat("abcdefghi.", 25) + "abcd", bad: "octets"},
		{in: "exa mple.com", bad: "holds ' '"},
		{in: "exa_mple.com", bad: "exa_mple"},
		{in: "example.com\r\nMAIL FROM:<x>", bad: "control character"},
		{in: "exam\x00ple.com", bad: "control character"},
		{in: "ex\tample.com", bad: "control character"},
		{in: "-example.com", bad: "hyphen"},
		{in: "example-.com", bad: "hyphen"},
		{in: "exa<mple>.com", bad: "exa"},
		{in: "[192.0.2.1]", bad: "address literal"},
		{in: "user@example.com", bad: "user@example.com"},
		{in: "xn--zz.example", bad: "xn--zz"},
		{in: "\xff.example", bad: "UTF-8"},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if tt.bad == "" {
			if err != nil || got != tt.want {
				t.Errorf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("Normalize(%q) = %q, want an error mentioning %q", tt.in, got, tt.bad)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Normalize(%q): error %v does not wrap ErrInvalid", tt.in, err)
		}
		if !strings.Contains(err.Error(), tt.bad) {
			t.Errorf("Normalize(%q): error %q does not mention %q", tt.in, err, tt.bad)
		}
		if !strings.Contains(err.Error(), "invalid domain") {
			t.Errorf("Normalize(%q): error %q does not say what was invalid", tt.in, err)
		}
	}
}

func TestNormalizeCanonicalDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Normalize("mail.example.com"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Normalize of a canonical domain allocated %v times", allocs)
	}
}

func TestParseLiteral(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
		bad      bool
	}{
		{in: "example.com"},
		{in: "[192.0.2.1]", want: "[192.0.2.1]", ok: true},
		{in: "[IPv6:2001:db8::1]", want: "[IPv6:2001:db8::1]", ok: true},
		{in: "[ipv6:2001:DB8::1]", want: "[IPv6:2001:db8::1]", ok: true},
		{in: "[2001:db8::1]", ok: true, bad: true},
		{in: "[IPv6:192.0.2.1]", ok: true, bad: true},
		{in: "[192.0.2.1", ok: true, bad: true},
		{in: "[example.com]", ok: true, bad: true},
		{in: "[fe80::1%eth0]", ok: true, bad: true},
	}
	for _, tt := range tests {
		addr, ok, err := ParseLiteral(tt.in)
		if ok != tt.ok || (err != nil) != tt.bad {
			t.Errorf("ParseLiteral(%q) = %v, %v, %v", tt.in, addr, ok, err)
			continue
		}
		if ok && !tt.bad && FormatLiteral(addr) != tt.want {
			t.Errorf("FormatLiteral(ParseLiteral(%q)) = %q, want %q", tt.in, FormatLiteral(addr), tt.want)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern, domain string
		want            bool
	}{
		{"gmail.com", "gmail.com", true},
		{"gmail.com", "notgmail.com", false},
		{"gmail.com", "mail.gmail.com", false},
		{"gmail.com", "gmail.com.evil", false},
		{"GMAIL.com.", "gmail.com", true},
		{".example.com", "example.com", true},
		{".example.com", "a.example.com", true},
		{".example.com", "a.b.example.com", true},
		{".example.com", "notexample.com", false},
		{".example.com", "example.com.au", false},
		{".example.com", "xexample.com", false},
		{".com", "example.com", true},
		{"*", "anything.example", true},
		{"bücher.example", "xn--bcher-kva.example", true},
		{".bücher.example", "shop.xn--bcher-kva.example", true},
	}
	for _, tt := range tests {
		p, err := CompilePattern(tt.pattern)
		if err != nil {
			t.Fatalf("CompilePattern(%q): %v", tt.pattern, err)
		}
		if got := p.Match(tt.domain); got != tt.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.domain, got, tt.want)
		}
	}
}

func TestCompilePatternErrors(t *testing.T) {
	for _, p := range []string{"", ".", "*.example.com", "gmail.*", "exa mple.com", "..com", "a\nb"} {
		if _, err := CompilePattern(p); err == nil {
			t.Errorf("CompilePattern(%q) succeeded", p)
		} else if !strings.Contains(err.Error(), "pattern") {
			t.Errorf("CompilePattern(%q): error %q does not name the pattern", p, err)
		}
	}
}

// FuzzNormalize checks that Normalize never panics and that whatever it
// accepts is a valid, stable A-label domain that matches itself.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"example.com", "Bücher.Example.", "a..b", "xn--bcher-kva.example", "[1.2.3.4]", "é", "-a.b", strings.Repeat("a.", 130)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Normalize(%q): error %v does not wrap ErrInvalid", in, err)
			}
			return
		}
		if !isCanonical(out) && !strings.Contains(out, "xn--") {
			t.Fatalf("Normalize(%q) = %q, not a canonical LDH domain", in, out)
		}
		if len(out) > MaxLength {
			t.Fatalf("Normalize(%q) = %q: too long", in, out)
		}
		for _, label := range strings.Split(out, ".") {
			if err := checkLabel(label); err != nil {
				t.Fatalf("Normalize(%q) = %q: %v", in, out, err)
			}
		}
		again, err := Normalize(out)
		if err != nil || again != out {
			t.Fatalf("Normalize not idempotent: %q → %q → %q, %v", in, out, again, err)
		}
		p, err := CompilePattern(out)
		if err != nil || !p.Match(out) {
			t.Fatalf("pattern %q does not match itself: %v", out, err)
		}
		sp, err := CompilePattern("." + out)
		if err != nil || !sp.Match("sub."+out) || !sp.Match(out) {
			t.Fatalf("suffix pattern .%q does not match its own subdomain: %v", out, err)
		}
	})
}
