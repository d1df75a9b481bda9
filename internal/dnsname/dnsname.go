// Package dnsname normalises mail domains and matches them against routing
// patterns.
//
// A domain is normalised once, at the edge, into the form every other part of
// mailroute works with: lower case, no trailing dot, Unicode labels converted
// to A-labels (IDNA2008, the lookup profile of golang.org/x/net/idna), and
// checked against the host name rules of RFC 1035 §2.3.1 / RFC 1123 §2.1
// (letters, digits and hyphens; labels of 1–63 octets, no leading or trailing
// hyphen; at most 253 octets in all). RFC 5321 §4.1.3 address literals
// ("[192.0.2.1]", "[IPv6:2001:db8::1]") are recognised separately.
package dnsname

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrInvalid is wrapped by every error Normalize returns.
var ErrInvalid = errors.New("invalid domain")

// Error describes why a domain was refused; it names the input.
type Error struct {
	Input  string // the domain as given (quoted with %q when printed)
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid domain %q: %s", e.Input, e.Reason)
}

// Unwrap lets errors.Is(err, ErrInvalid) hold.
func (e *Error) Unwrap() error { return ErrInvalid }

func invalid(input, format string, args ...any) error {
	return &Error{Input: input, Reason: fmt.Sprintf(format, args...)}
}

// MaxLength is the longest domain name in its presentation form without the
// trailing dot (RFC 1035 §2.3.4: 255 octets on the wire).
const MaxLength = 253

// maxLabel is the longest label (RFC 1035 §2.3.4).
const maxLabel = 63

var lookup = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(true),
	idna.ValidateLabels(true),
	idna.VerifyDNSLength(true),
)

// Normalize returns the canonical form of a mail domain: an A-label domain in
// lower case without a trailing dot. Input that is already canonical is
// returned as is, without allocating. Address literals are not domains: use
// ParseLiteral for those.
func Normalize(domain string) (string, error) {
	if isCanonical(domain) {
		return domain, nil
	}
	return normalizeSlow(domain)
}

// isCanonical reports whether s is already a valid lower-case LDH domain with
// no trailing dot, the common case that must cost nothing.
func isCanonical(s string) bool {
	if len(s) == 0 || len(s) > MaxLength {
		return false
	}
	labelLen := 0
	var prev byte = '.'
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if prev == '.' {
				return false
			}
		case c == '.':
			if prev == '.' || prev == '-' {
				return false
			}
			labelLen = 0
			prev = c
			continue
		default:
			return false
		}
		labelLen++
		if labelLen > maxLabel {
			return false
		}
		prev = c
	}
	if prev == '-' || prev == '.' {
		return false
	}
	// "xn--" labels must be valid punycode; leave them to the slow path.
	return !strings.Contains(s, "xn--")
}

func normalizeSlow(input string) (string, error) {
	if input == "" {
		return "", invalid(input, "empty")
	}
	for i := 0; i < len(input); i++ {
		switch c := input[i]; {
		case c == '\r' || c == '\n' || c == 0:
			return "", invalid(input, "contains a control character (CR, LF or NUL)")
		case c < 0x20 || c == 0x7f:
			return "", invalid(input, "contains control character %#02x", c)
		}
	}
	if !utf8.ValidString(input) {
		return "", invalid(input, "not valid UTF-8")
	}
	if strings.HasPrefix(input, "[") {
		return "", invalid(input, "is an address literal, not a domain")
	}
	s := strings.TrimSuffix(input, ".")
	if s == "" {
		return "", invalid(input, "empty")
	}
	// Check the raw labels first so the error names the real problem rather
	// than whatever the IDNA library reports.
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return "", invalid(input, "empty label")
		}
	}
	ascii := s
	if !isASCII(s) || strings.Contains(s, "xn--") || strings.Contains(s, "XN--") {
		// Unicode labels become A-labels; existing A-labels must be valid
		// punycode that round-trips.
		a, err := lookup.ToASCII(s)
		if err != nil {
			return "", invalid(input, "%v", idnaReason(err))
		}
		ascii = a
	}
	ascii = strings.ToLower(ascii)
	if len(ascii) > MaxLength {
		return "", invalid(input, "%d octets long, the limit is %d", len(ascii), MaxLength)
	}
	for _, label := range strings.Split(ascii, ".") {
		if err := checkLabel(label); err != nil {
			return "", invalid(input, "%s", err)
		}
	}
	return ascii, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// idnaReason shortens the IDNA library's messages, which repeat the input.
func idnaReason(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "idna:") {
		return strings.TrimSpace(msg[i+2:])
	}
	return msg
}

func checkLabel(label string) error {
	switch {
	case label == "":
		return errors.New("empty label")
	case len(label) > maxLabel:
		return fmt.Errorf("label %q is %d octets long, the limit is %d", label, len(label), maxLabel)
	case label[0] == '-' || label[len(label)-1] == '-':
		return fmt.Errorf("label %q starts or ends with a hyphen", label)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("label %q holds %q, which no host name may", label, rune(c))
		}
	}
	return nil
}

// ParseLiteral parses an RFC 5321 §4.1.3 address literal: "[192.0.2.1]" or
// "[IPv6:2001:db8::1]". It reports ok=false when s does not start with '['.
func ParseLiteral(s string) (addr netip.Addr, ok bool, err error) {
	if !strings.HasPrefix(s, "[") {
		return netip.Addr{}, false, nil
	}
	if !strings.HasSuffix(s, "]") {
		return netip.Addr{}, true, invalid(s, "address literal without closing ']'")
	}
	inner := s[1 : len(s)-1]
	wantV6 := false
	if len(inner) >= 5 && strings.EqualFold(inner[:5], "IPv6:") {
		inner, wantV6 = inner[5:], true
	}
	a, perr := netip.ParseAddr(inner)
	if perr != nil || a.Zone() != "" {
		return netip.Addr{}, true, invalid(s, "not an IPv4 or IPv6 address literal")
	}
	if a.Is4() == wantV6 {
		if wantV6 {
			return netip.Addr{}, true, invalid(s, "IPv6: tag on an IPv4 address")
		}
		return netip.Addr{}, true, invalid(s, "IPv6 address literal needs the \"IPv6:\" tag (RFC 5321 §4.1.3)")
	}
	return a, true, nil
}

// FormatLiteral is the canonical form of an address literal.
func FormatLiteral(a netip.Addr) string {
	if a.Is4() {
		return "[" + a.String() + "]"
	}
	return "[IPv6:" + a.String() + "]"
}

// Pattern kinds, as Compile reports them.
const (
	PatternExact    = iota // "gmail.com"
	PatternSuffix          // ".example.com": it and every subdomain
	PatternWildcard        // "*"
)

// Pattern is a checked routing pattern.
type Pattern struct {
	Kind   int
	Domain string // normalised; empty for PatternWildcard
	Source string // as written by the user
}

// CompilePattern checks and normalises a routing pattern.
func CompilePattern(p string) (Pattern, error) {
	switch {
	case p == "*":
		return Pattern{Kind: PatternWildcard, Source: p}, nil
	case strings.HasPrefix(p, "."):
		d, err := Normalize(p[1:])
		if err != nil {
			return Pattern{}, fmt.Errorf("pattern %q: %w", p, err)
		}
		return Pattern{Kind: PatternSuffix, Domain: d, Source: p}, nil
	case strings.ContainsAny(p, "*?"):
		return Pattern{}, fmt.Errorf("pattern %q: only \"*\" alone is a wildcard; use \".example.com\" for a domain and its subdomains", p)
	default:
		d, err := Normalize(p)
		if err != nil {
			return Pattern{}, fmt.Errorf("pattern %q: %w", p, err)
		}
		return Pattern{Kind: PatternExact, Domain: d, Source: p}, nil
	}
}

// Match reports whether the normalised domain matches the pattern, label by
// label: ".example.com" matches "example.com" and "a.example.com" but never
// "notexample.com".
func (p Pattern) Match(domain string) bool {
	switch p.Kind {
	case PatternWildcard:
		return true
	case PatternSuffix:
		return HasSuffix(domain, p.Domain)
	default:
		return domain == p.Domain
	}
}

// HasSuffix reports whether name equals suffix or ends with "."+suffix. Both
// must be normalised. It never matches a partial label.
func HasSuffix(name, suffix string) bool {
	if len(name) == len(suffix) {
		return name == suffix
	}
	return len(name) > len(suffix) &&
		name[len(name)-len(suffix)-1] == '.' &&
		name[len(name)-len(suffix):] == suffix
}

// TrimDot removes one trailing dot (DNS answers carry it).
func TrimDot(s string) string {
	return strings.TrimSuffix(s, ".")
}
