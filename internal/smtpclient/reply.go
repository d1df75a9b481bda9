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
type replyTexts struct {
	s    [4]string
	next int
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
