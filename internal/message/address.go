package message

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mailroute/go-mailroute/internal/dnsname"
)

// Length limits of RFC 5321 §4.5.3.1.
const (
	// MaxLocalPart is the longest local part in octets (§4.5.3.1.1).
	MaxLocalPart = 64
	// MaxPath is the longest reverse- or forward-path in octets, the angle
	// brackets included (§4.5.3.1.3).
	MaxPath = 256
)

// maxInput is the longest input parsed at all. It is well above MaxPath
// because Unicode input can shrink on its way to an A-label (case folding,
// compatibility mapping), but it stops megabytes of input from reaching the
// IDNA code.
const maxInput = 4 * MaxPath

// Address is an envelope mailbox in the form it takes on the wire.
type Address struct {
	// Local is the local part as it goes on the wire: a dot-atom, or a
	// quoted-string with its quotes, exactly as given (case preserved; the
	// receiving domain decides what case means).
	Local string
	// Domain is the normalised domain: a lower-case A-label without a
	// trailing dot, or an address literal in canonical form ("[192.0.2.1]",
	// "[IPv6:2001:db8::1]").
	Domain string
	// Literal is the address of an address-literal domain; it is the zero
	// netip.Addr (not valid) for a domain name.
	Literal netip.Addr
	// UTF8 reports a local part with non-ASCII characters: sending to or
	// from it needs the SMTPUTF8 extension (RFC 6531). Internationalised
	// domains alone do not set it, since they travel as A-labels.
	UTF8 bool
}

// String is the address as it goes between "<" and ">" on the wire:
// Local + "@" + Domain. The zero Address (the null reverse-path) gives "".
func (a Address) String() string {
	if a.Local == "" && a.Domain == "" {
		return ""
	}
	return a.Local + "@" + a.Domain
}

// ParseAddress parses a mailbox (RFC 5321 §4.1.2 Mailbox, RFC 6531 for
// UTF-8 local parts) as used in a forward-path or a non-null reverse-path.
//
// The address is given bare, as net/smtp takes it ("user@example.com"). One
// enclosing pair of angle brackets is also accepted and stripped
// ("<user@example.com>"), because go-mail's GetRecipients and mail headers
// hand addresses over in that form; any other '<' or '>' is refused, even
// inside a quoted local part where the grammar would allow it, because a
// server that scans for '>' would end the path there. Obsolete source routes
// ("@relay:user@example.com") are refused.
//
// Every error is an *AddressError that names the input and wraps
// ErrInvalidAddress.
func ParseAddress(s string) (Address, error) {
	if s == "" {
		return Address{}, addrErr(s, "empty")
	}
	if len(s) > maxInput {
		return Address{}, addrErr(s, "%d octets long; a path is at most %d (RFC 5321 §4.5.3.1.3)", len(s), MaxPath)
	}
	if reason := checkChars(s); reason != "" {
		return Address{}, addrErr(s, "%s", reason)
	}
	addr := s
	if len(addr) >= 2 && addr[0] == '<' && addr[len(addr)-1] == '>' {
		addr = addr[1 : len(addr)-1]
	}
	if strings.ContainsAny(addr, "<>") {
		return Address{}, addrErr(s, "contains '<' or '>' beyond one enclosing pair of angle brackets")
	}
	if addr == "" {
		return Address{}, addrErr(s, "empty (\"<>\" is the null reverse-path, not a mailbox)")
	}
	if addr[0] == '@' {
		if strings.IndexByte(addr, ':') >= 0 {
			return Address{}, addrErr(s, "source routes (\"@host:\") are obsolete and not supported; give the mailbox alone")
		}
		return Address{}, addrErr(s, "empty local part")
	}

	var a Address
	var domain, reason string
	if addr[0] == '"' {
		a.Local, domain, a.UTF8, reason = splitQuoted(addr)
	} else {
		at := strings.LastIndexByte(addr, '@')
		if at < 0 {
			return Address{}, addrErr(s, "no '@' (an address is local-part@domain)")
		}
		a.Local, domain = addr[:at], addr[at+1:]
		a.UTF8, reason = checkDotAtom(a.Local)
	}
	if reason != "" {
		return Address{}, addrErr(s, "%s", reason)
	}
	if len(a.Local) > MaxLocalPart {
		return Address{}, addrErr(s, "local part is %d octets long; the limit is %d (RFC 5321 §4.5.3.1.1)", len(a.Local), MaxLocalPart)
	}
	if err := a.setDomain(domain); err != nil {
		if ae, ok := err.(*AddressError); ok {
			ae.Input = s
		}
		return Address{}, err
	}
	if n := len(a.Local) + 1 + len(a.Domain) + 2; n > MaxPath {
		return Address{}, addrErr(s, "path is %d octets long with its angle brackets; the limit is %d (RFC 5321 §4.5.3.1.3)", n, MaxPath)
	}
	return a, nil
}

// ParseReversePath parses the address of MAIL FROM. "" and "<>" are the null
// reverse-path (RFC 5321 §4.5.5, used for bounces and other notifications):
// null is true and the Address is zero. Anything else is parsed by
// ParseAddress.
func ParseReversePath(s string) (a Address, null bool, err error) {
	if s == "" || s == "<>" {
		return Address{}, true, nil
	}
	a, err = ParseAddress(s)
	return a, false, err
}

// checkChars refuses what must never reach the wire, wherever it is: control
// characters (CR and LF above all: they end the command) and invalid UTF-8.
func checkChars(s string) string {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\r' || c == '\n':
			return "contains a line break (CR or LF)"
		case c == 0:
			return "contains NUL"
		case c < 0x20 || c == 0x7f:
			return "contains control character " + quoteByte(c)
		}
	}
	if !utf8.ValidString(s) {
		return "not valid UTF-8"
	}
	return ""
}

// isAtext reports the ASCII atext characters of RFC 5322 §3.2.3, which
// RFC 5321 §4.1.2 uses for the dot-atom form.
var isAtext = func() (t [utf8.RuneSelf]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-/=?^_`{|}~" {
		t[c] = true
	}
	return t
}()

// checkDotAtom checks an unquoted local part: atoms of atext (or, by
// RFC 6531, non-ASCII characters) separated by single dots.
func checkDotAtom(local string) (utf8Local bool, reason string) {
	if local == "" {
		return false, "empty local part"
	}
	prevDot := true // a dot at the start is as bad as two in a row
	for i, r := range local {
		switch {
		case r == '.':
			if i == 0 {
				return false, "local part starts with a dot (quote it, or remove the dot)"
			}
			if prevDot {
				return false, "local part has two dots in a row (quote it, or remove a dot)"
			}
			prevDot = true
			continue
		case r == ' ':
			return false, "contains a space outside a quoted local part"
		case r < utf8.RuneSelf:
			if !isAtext[r] {
				return false, "local part holds " + quoteRune(r) + ", which only a quoted local part may"
			}
		default:
			if unicode.IsControl(r) || unicode.IsSpace(r) {
				return false, "local part holds " + quoteRune(r) + ", a control or space character"
			}
			utf8Local = true
		}
		prevDot = false
	}
	if prevDot {
		return false, "local part ends with a dot (quote it, or remove the dot)"
	}
	return utf8Local, ""
}

// splitQuoted takes a quoted-string local part off the front of addr
// (which starts with '"') and returns it with its quotes, and the domain
// after the '@' that must follow it. qtextSMTP is printable ASCII but '"'
// and '\'; a quoted-pair is '\' and printable ASCII (RFC 5321 §4.1.2);
// RFC 6531 adds non-ASCII characters to qtext.
func splitQuoted(addr string) (local, domain string, utf8Local bool, reason string) {
	i := 1
	for {
		if i >= len(addr) {
			return "", "", false, "quoted local part has no closing '\"'"
		}
		c := addr[i]
		if c == '"' {
			break
		}
		if c == '\\' {
			if i+1 >= len(addr) {
				return "", "", false, "quoted local part has no closing '\"'"
			}
			if e := addr[i+1]; e < 0x20 || e > 0x7e {
				return "", "", false, "'\\' in a quoted local part must be followed by a printable ASCII character"
			}
			i += 2
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(addr[i:])
			if unicode.IsControl(r) {
				return "", "", false, "quoted local part holds " + quoteRune(r) + ", a control character"
			}
			utf8Local = true
			i += size
			continue
		}
		i++
	}
	local, rest := addr[:i+1], addr[i+1:]
	if len(local) == 2 {
		return "", "", false, "empty local part"
	}
	if rest == "" {
		return "", "", false, "no '@' (an address is local-part@domain)"
	}
	if rest[0] != '@' {
		return "", "", false, "quoted local part must be followed by '@' (a '\"' inside it needs a '\\' before it)"
	}
	return local, rest[1:], utf8Local, ""
}

// setDomain normalises the domain part: an address literal or a domain name.
func (a *Address) setDomain(domain string) error {
	switch {
	case domain == "":
		return addrErr("", "empty domain")
	case strings.IndexByte(domain, ' ') >= 0:
		return addrErr("", "contains a space outside a quoted local part")
	}
	if ip, ok, err := dnsname.ParseLiteral(domain); ok {
		if err != nil {
			return &AddressError{Reason: err.Error(), Err: err}
		}
		a.Domain, a.Literal = dnsname.FormatLiteral(ip), ip
		return nil
	}
	d, err := dnsname.Normalize(domain)
	if err != nil {
		return &AddressError{Reason: err.Error(), Err: err}
	}
	// Checked on the normalised form, which "192.0.2.1." and fullwidth
	// digits also reach.
	if looksNumeric(d) {
		return addrErr("", "an IP address must be written as an address literal, such as [192.0.2.1] or [IPv6:2001:db8::1] (RFC 5321 §4.1.3)")
	}
	a.Domain = d
	return nil
}

// looksNumeric reports a dotted-quad IPv4 address written without the
// brackets of an address literal. (Checked by hand: a failed
// netip.ParseAddr allocates its error, on the path every domain takes.)
func looksNumeric(domain string) bool {
	for i := 0; i < len(domain); i++ {
		if c := domain[i]; (c < '0' || c > '9') && c != '.' {
			return false // a letter or hyphen: a name (strings.Trim would build its set per call)
		}
	}
	_, err := netip.ParseAddr(domain)
	return err == nil
}

func quoteByte(c byte) string { return fmt.Sprintf("%#02x", c) }

func quoteRune(r rune) string { return strconv.QuoteRune(r) }

// StringFrom is String for an Address parsed from in: in itself (less one
// enclosing pair of angle brackets) when it already is that form, as it
// nearly always is, so that the common case costs no allocation.
func (a Address) StringFrom(in string) string {
	if len(in) >= 2 && in[0] == '<' && in[len(in)-1] == '>' {
		in = in[1 : len(in)-1]
	}
	if len(in) == len(a.Local)+1+len(a.Domain) && a.Local != "" &&
		in[:len(a.Local)] == a.Local && in[len(a.Local)] == '@' && in[len(a.Local)+1:] == a.Domain {
		return in
	}
	return a.String()
}
