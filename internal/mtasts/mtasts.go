// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): the _mta-sts TXT record, the policy file served over
// HTTPS, and the rule that says which MX hosts a policy allows.
//
// The parsers are strict where the RFC says MUST (version first, one mode,
// max_age within a year) and lenient where it lets senders be (unknown keys
// are ignored, LF alone ends a line as well as CRLF).
package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Mode is a policy's mode (RFC 8461 §3.2).
type Mode string

// The modes of RFC 8461 §5.
const (
	// Enforce: deliver only to matching MX hosts with a certificate valid
	// for their name, over TLS; never in plaintext.
	Enforce Mode = "enforce"
	// Testing: deliver as without a policy, and report failures (TLS-RPT).
	Testing Mode = "testing"
	// None: the domain has withdrawn its policy.
	None Mode = "none"
)

// MaxAgeLimit is the largest max_age a policy may state: 31557600 seconds,
// about a year (RFC 8461 §3.2).
const MaxAgeLimit = 31557600

// MaxPolicySize bounds the policy file read; RFC 8461 §3.3 lets senders
// refuse larger ones (64 KiB).
const MaxPolicySize = 64 << 10

// Policy is a parsed policy file.
type Policy struct {
	Mode   Mode
	MX     []string // patterns: "mx.example.com" or "*.example.com", lower case
	MaxAge int      // seconds
}

// ErrNoRecord means the domain publishes no usable _mta-sts TXT record, and
// so has no policy.
var ErrNoRecord = errors.New("no MTA-STS TXT record")

// ParseRecord reads one _mta-sts TXT record ("v=STSv1; id=20240101;") and
// returns its id. The version must come first; the id is 1 to 32
// alphanumeric characters (RFC 8461 §3.1).
func ParseRecord(txt string) (id string, err error) {
	fields := strings.Split(txt, ";")
	for i, f := range fields {
		f = strings.Trim(f, " \t")
		if f == "" {
			if i == len(fields)-1 {
				break // the trailing ";" is allowed
			}
			return "", fmt.Errorf("MTA-STS record %q: empty field", txt)
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return "", fmt.Errorf("MTA-STS record %q: field %q has no '='", txt, f)
		}
		if i == 0 {
			if k != "v" || v != "STSv1" {
				return "", fmt.Errorf("MTA-STS record %q: does not start with v=STSv1", txt)
			}
			continue
		}
		if k == "id" {
			if id != "" {
				return "", fmt.Errorf("MTA-STS record %q: two ids", txt)
			}
			if !validID(v) {
				return "", fmt.Errorf("MTA-STS record %q: id %q is not 1 to 32 letters and digits", txt, v)
			}
			id = v
		}
	}
	if id == "" {
		return "", fmt.Errorf("MTA-STS record %q: no id", txt)
	}
	return id, nil
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// SelectRecord picks the record from a name's TXT strings: those that
// start with "v=STSv1" count, and anything but exactly one of them means
// the domain has no policy (RFC 8461 §3.1).
func SelectRecord(txts []string) (id string, err error) {
	var found []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1") {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%w: %d records start with v=STSv1", ErrNoRecord, len(found))
	}
	return ParseRecord(found[0])
}

// ParsePolicy reads a policy file (RFC 8461 §3.2). version must be the
// first line and STSv1; mode and max_age must appear once; mx at least
// once unless the mode is none.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > MaxPolicySize {
		return nil, fmt.Errorf("MTA-STS policy of %d bytes is larger than %d", len(b), MaxPolicySize)
	}
	p := &Policy{MaxAge: -1}
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("MTA-STS policy line %d %q: no ':'", i+1, line)
		}
		k = strings.TrimSpace(k)
		v = strings.TrimSpace(v)
		if i == 0 && (k != "version" || v != "STSv1") {
			return nil, fmt.Errorf("MTA-STS policy does not start with version: STSv1")
		}
		switch k {
		case "version":
			if i != 0 {
				return nil, fmt.Errorf("MTA-STS policy line %d: version again", i+1)
			}
		case "mode":
			if p.Mode != "" {
				return nil, fmt.Errorf("MTA-STS policy line %d: mode again", i+1)
			}
			switch Mode(v) {
			case Enforce, Testing, None:
				p.Mode = Mode(v)
			default:
				return nil, fmt.Errorf("MTA-STS policy line %d: unknown mode %q", i+1, v)
			}
		case "max_age":
			if p.MaxAge >= 0 {
				return nil, fmt.Errorf("MTA-STS policy line %d: max_age again", i+1)
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || len(v) > 10 || strings.TrimLeft(v, "0123456789") != "" {
				return nil, fmt.Errorf("MTA-STS policy line %d: max_age %q is not a number of seconds", i+1, v)
			}
			p.MaxAge = min(n, MaxAgeLimit)
		case "mx":
			pat := strings.ToLower(strings.TrimSuffix(v, "."))
			if !validPattern(pat) {
				return nil, fmt.Errorf("MTA-STS policy line %d: mx %q is not a host name or *.domain", i+1, v)
			}
			p.MX = append(p.MX, pat)
		}
	}
	switch {
	case p.Mode == "":
		return nil, errors.New("MTA-STS policy has no mode")
	case p.MaxAge < 0:
		return nil, errors.New("MTA-STS policy has no max_age")
	case p.Mode != None && len(p.MX) == 0:
		return nil, errors.New("MTA-STS policy has no mx")
	}
	return p, nil
}

// validPattern accepts a host name, or "*." and a host name of at least
// two labels.
func validPattern(p string) bool {
	host := strings.TrimPrefix(p, "*.")
	if host == "" || len(host) > 253 || (host != p && !strings.Contains(host, ".")) {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Match reports whether the policy allows an MX host (RFC 8461 §4.1): an
// exact, case-insensitive match, or "*.example.com" matching exactly one
// label in front of example.com.
func (p *Policy) Match(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			first, parent, ok := strings.Cut(host, ".")
			if ok && first != "" && parent == rest {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

// String renders the policy as a policy file, for logs and TLS-RPT.
func (p *Policy) String() string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + string(p.Mode) + "\r\n")
	for _, mx := range p.MX {
		b.WriteString("mx: " + mx + "\r\n")
	}
	b.WriteString("max_age: " + strconv.Itoa(p.MaxAge) + "\r\n")
	return b.String()
}
