package dkimsign

import (
	"bufio"
	"bytes"
	"io"
	"net/mail"
	"strings"

	"github.com/mailroute/go-mailroute/internal/dnsname"
)

// Header is what signing needs to know about a message's header section.
type Header struct {
	// Count is how many fields of each name the header has, by lower-case
	// name.
	Count map[string]int
	// BodyFirst reports that the message does not start with a header
	// section: its first line is neither a field nor the empty line. Fields
	// put before such a message need an empty line after them, or its first
	// line would be read as a (broken) header field.
	BodyFirst bool
	// FromDomain is the domain of the first address of the From field, a
	// lower-case A-label, or "" when there is none that parses.
	FromDomain string
}

// Has reports whether the header has a field of that name (any case).
func (h *Header) Has(name string) bool { return h.Count[strings.ToLower(name)] > 0 }

// ScanHeader reads the header section of a canonical message (lines ending
// in CRLF) and stops at its end: the empty line, or the first line that is
// neither a field nor the continuation of one. The body is not read.
func ScanHeader(r io.Reader) (Header, error) {
	h := Header{Count: make(map[string]int, 16)}
	br := bufio.NewReaderSize(r, 4096)
	var from []byte // the first From field's value, unfolded
	inFrom := false
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A canonical line is at most 1000 octets with its CRLF;
			// anything longer is not a header line: the header ends.
			h.FromDomain = fromDomain(from)
			return h, nil
		}
		if len(line) == 0 && err != nil {
			if err == io.EOF {
				err = nil
			}
			h.FromDomain = fromDomain(from)
			return h, err
		}
		text := bytes.TrimRight(line, "\r\n")
		switch {
		case len(text) == 0:
			h.FromDomain = fromDomain(from)
			return h, nil
		case text[0] == ' ' || text[0] == '\t':
			if first {
				h.BodyFirst = true
				return h, nil
			}
			if inFrom {
				from = append(from, text...)
			}
			continue
		}
		colon := bytes.IndexByte(text, ':')
		name := text
		if colon > 0 {
			name = bytes.TrimRight(text[:colon], " \t") // obs-optional WSP before the colon
		}
		if colon <= 0 || !validFieldName(string(name)) {
			h.BodyFirst = first
			h.FromDomain = fromDomain(from)
			return h, nil
		}
		key := strings.ToLower(string(name))
		h.Count[key]++
		inFrom = key == "from" && h.Count[key] == 1
		if inFrom {
			from = append(from[:0], text[colon+1:]...)
		}
		if err != nil { // the last line had no line end: a header-only message
			h.FromDomain = fromDomain(from)
			return h, nil
		}
	}
}

// fromDomain returns the domain of the first address in a From value, or
// "" when it does not parse or its domain is not a valid domain name.
func fromDomain(value []byte) string {
	if len(value) == 0 {
		return ""
	}
	list, err := mail.ParseAddressList(string(value))
	if err != nil || len(list) == 0 {
		return ""
	}
	at := strings.LastIndexByte(list[0].Address, '@')
	if at < 0 {
		return ""
	}
	d, err := dnsname.Normalize(list[0].Address[at+1:])
	if err != nil {
		return ""
	}
	return d
}
