package smtpclient

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Reply is one SMTP reply (RFC 5321 §4.2), possibly multi-line.
type Reply struct {
	Code     int
	Enhanced [3]int // RFC 3463 enhanced status code (RFC 2034); zero when none
	// Message holds the text of every line joined by "\n", with the
	// enhanced status code stripped from the start of each line.
	Message string
}

// Lines returns the text lines of the reply.
func (r Reply) Lines() []string {
	if r.Message == "" {
		return nil
	}
	return strings.Split(r.Message, "\n")
}

// String formats the reply as "250 2.0.0 text".
func (r Reply) String() string {
	// Built in one buffer: one allocation, the result.
	var stack [128]byte
	b := strconv.AppendInt(stack[:0], int64(r.Code), 10)
	if r.Enhanced != [3]int{} {
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(r.Enhanced[0]), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(r.Enhanced[1]), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(r.Enhanced[2]), 10)
	}
	if r.Message != "" {
		b = append(b, ' ')
		for i := 0; i < len(r.Message); i++ {
			if c := r.Message[i]; c == '\n' {
				b = append(b, " / "...)
			} else {
				b = append(b, c)
			}
		}
	}
	return string(b)
}

// Positive reports a 2xx reply.
func (r Reply) Positive() bool { return r.Code >= 200 && r.Code < 300 }

const (
	// maxReplyLine bounds one reply line without its CRLF. RFC 5321 §4.5.3.1.5
	// says 512 octets; servers exceed it in practice, so allow more.
	maxReplyLine = 2000
	// maxReplyLines bounds the lines of one multi-line reply.
	maxReplyLines = 200
	// readBufSize must exceed maxReplyLine+2 so bufio.ReadSlice can tell an
	// over-long line from a short read.
	readBufSize = 4096
)

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// readReply reads one complete reply from r. scratch is a reusable buffer
// (returned, possibly grown) so that a single-line reply costs one
// allocation (its Message string), or none when texts (may be nil) has
// seen the same text before. It never reads more than
// maxReplyLines lines of at most maxReplyLine octets.
func readReply(r *bufio.Reader, scratch []byte, texts *replyTexts) (Reply, []byte, error) {
	var rep Reply
	msg := scratch[:0]
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return Reply{}, msg, protocolErrorf("reply has more than %d lines", maxReplyLines)
		}
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return Reply{}, msg, protocolErrorf("reply line longer than %d octets", maxReplyLine)
			}
			if err == io.EOF && (n > 0 || len(line) > 0) {
				err = io.ErrUnexpectedEOF
			}
			return Reply{}, msg, err
		}
		raw := line
		if n == 0 && texts != nil {
			if rep, ok := texts.reply(raw); ok {
				return rep, msg, nil
			}
		}
		line = line[:len(line)-1]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) > maxReplyLine {
			return Reply{}, msg, protocolErrorf("reply line longer than %d octets", maxReplyLine)
		}
		code, last, text, err := parseReplyLine(line)
		if err != nil {
			return Reply{}, msg, err
		}
		if n == 0 {
			rep.Code = code
			if enh, rest, ok := parseEnhanced(text, code/100); ok {
				rep.Enhanced = enh
				text = rest
			}
		} else {
			if code != rep.Code {
				return Reply{}, msg, protocolErrorf("multi-line reply mixes codes %d and %d", rep.Code, code)
			}
			if rep.Enhanced != [3]int{} {
				if _, rest, ok := parseEnhanced(text, code/100); ok {
					text = rest
				}
			}
			msg = append(msg, '\n')
		}
		if last && n == 0 && texts != nil {
			// A reply of one line: remembered whole, its text a part of
			// the line's string (one allocation, as the text alone).
			rep.Message = texts.remember(raw, text, rep)
			return rep, msg, nil
		}
		msg = append(msg, text...)
		if last {
			break
		}
	}
	if len(msg) > 0 {
		if texts != nil {
			rep.Message = texts.text(msg)
		} else {
			rep.Message = string(msg)
		}
	}
	return rep, msg, nil
}

// replyTexts remembers the last few reply texts of one session. A server
// answers the same commands with the same words message after message
// ("2.0.0 Ok", "2.1.5 Ok", "2.0.0 OK: queued"), so a text equal to one seen
// before reuses its string instead of allocating a copy: most replies then
// cost no allocation at all. Only equal bytes are ever shared.
//
// Replies of one line, nearly all of them, are remembered whole: a line
// equal, octet for octet and line end included, to one parsed before is
// that reply again, without parsing it (code, separator and enhanced
// code) a second time.
type replyTexts struct {
	s    [4]string
	next int

	lines    [4]seenLine
	nextLine int
}

// seenLine is one reply line as it arrived, with the reply it gave.
type seenLine struct {
	raw string
	rep Reply
}

// reply returns the reply of a line equal to raw seen before.
func (t *replyTexts) reply(raw []byte) (Reply, bool) {
	for i := range t.lines {
		if l := &t.lines[i]; l.raw == string(raw) && l.raw != "" { // compared without converting
			return l.rep, true
		}
	}
	return Reply{}, false
}

// remember keeps raw, a whole reply of one line, and rep, parsed from it,
// with text (a part of raw) as its message; it returns the message.
func (t *replyTexts) remember(raw, text []byte, rep Reply) string {
	s := string(raw)
	if len(text) > 0 {
		// text is raw[k:k+len(text)]: slices taken from the front only,
		// so what lies beyond text's end is raw's beyond.
		k := cap(raw) - cap(text)
		rep.Message = s[k : k+len(text)]
	}
	t.lines[t.nextLine] = seenLine{raw: s, rep: rep}
	t.nextLine = (t.nextLine + 1) % len(t.lines)
	return rep.Message
}

// text returns msg as a string, a remembered one when equal.
func (t *replyTexts) text(msg []byte) string {
	for _, s := range t.s {
		if s == string(msg) { // compared without converting
			return s
		}
	}
	s := string(msg)
	t.s[t.next] = s
	t.next = (t.next + 1) % len(t.s)
	return s
}

// parseReplyLine splits "250-text" / "250 text" / "250".
func parseReplyLine(line []byte) (code int, last bool, text []byte, err error) {
	if len(line) < 3 {
		return 0, false, nil, protocolErrorf("short reply line %q", line)
	}
	c0, c1, c2 := line[0], line[1], line[2]
	if c0 < '2' || c0 > '5' || c1 < '0' || c1 > '9' || c2 < '0' || c2 > '9' {
		return 0, false, nil, protocolErrorf("invalid reply code in %q", truncate(line))
	}
	code = int(c0-'0')*100 + int(c1-'0')*10 + int(c2-'0')
	if len(line) == 3 {
		return code, true, nil, nil
	}
	switch line[3] {
	case ' ':
		last = true
	case '-':
	default:
		return 0, false, nil, protocolErrorf("invalid reply separator in %q", truncate(line))
	}
	return code, last, line[4:], nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// parseEnhanced recognises an RFC 3463 status code "class.subject.detail"
// at the start of text (followed by a space or the end), with class equal to
// the reply's first digit. It returns the code and the text after it.
func parseEnhanced(text []byte, class int) ([3]int, []byte, bool) {
	var out [3]int
	if class != 2 && class != 4 && class != 5 {
		return out, text, false
	}
	i := 0
	for part := 0; part < 3; part++ {
		start := i
		v := 0
		for i < len(text) && text[i] >= '0' && text[i] <= '9' && i-start < 3 {
			v = v*10 + int(text[i]-'0')
			i++
		}
		if i == start {
			return out, text, false
		}
		if part == 0 && (i-start != 1 || v != class) {
			return out, text, false
		}
		out[part] = v
		if part < 2 {
			if i >= len(text) || text[i] != '.' {
				return out, text, false
			}
			i++
		}
	}
	switch {
	case i == len(text):
		return out, text[i:], true
	case text[i] == ' ':
		return out, text[i+1:], true
	}
	return [3]int{}, text, false
}

// replyString is r.String(), the previous result reused when r is the
// same reply as last time.
func (c *Conn) replyString(r Reply) string {
	if c.lastStr == "" || r != c.lastRep {
		c.lastRep, c.lastStr = r, r.String()
	}
	return c.lastStr
}
