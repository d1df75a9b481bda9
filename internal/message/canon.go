package message

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
)

// MaxLineLength is the longest line of a message in octets, the CRLF not
// counted (RFC 5321 §4.5.3.1.6).
const MaxLineLength = 998

var crlf = []byte("\r\n")

// fileBufferSize is the bufio.Writer in front of a spill file: large enough
// that the many short runs between line ends become few write calls.
const fileBufferSize = 64 << 10

// canonicalizer is the streaming state machine behind NewBody. Each Write
// consumes any slice of the input, so state that spans a read boundary (a CR
// whose LF has not arrived yet, the length of the line so far) lives here
// rather than in a lookahead buffer. Output goes to mem until it would pass
// spill octets, then to a temporary file.
type canonicalizer struct {
	// Output.
	mem     []byte
	spill   int64 // memory limit; <0: never spill
	max     int64 // size limit; <=0: none
	tempDir string
	file    *os.File
	path    string // the file's name while it still has to be removed
	w       *bufio.Writer
	size    int64 // octets of output so far

	// Input state.
	pendingCR bool  // the last input octet was a CR whose line end is not yet written
	lineLen   int   // octets of the current line so far, its line end not counted
	line      int64 // 1-based number of the current line
	in        int64 // input octets consumed
	eightBit  bool
	err       error // sticky: the first error ends the pass
}

// maxSpan bounds how much unchanged input Write collects before copying it
// out, so that the size limit and the spill decision are not postponed to
// the end of a large Write.
const maxSpan = 64 << 10

// Write canonicalises p. It never keeps p.
//
// Input that is already canonical (lines ending in CRLF) is copied out in
// spans of many lines, one copy per span; only a bare CR or LF breaks a span
// to put a CRLF in its place.
func (c *canonicalizer) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	total := len(p)
	if !c.pendingCR && c.lineLen == 0 && len(p) <= maxSpan {
		if lines, eightBit, ok := scanCanonical(p); ok {
			// Already canonical, as most messages handed over whole
			// are: checked in a few vectorised passes, copied out once.
			c.eightBit = c.eightBit || eightBit
			if !c.emitScanned(p) {
				return 0, c.err
			}
			c.line += lines
			c.in += int64(len(p))
			return total, nil
		}
	}
	if c.pendingCR && len(p) > 0 {
		// A CR ends a line either way: with its LF, or alone (a bare CR,
		// which becomes CRLF, so "\r\r\n" is two line ends).
		c.pendingCR = false
		if p[0] == '\n' {
			p = p[1:]
			c.in++
		}
		if !c.emit(crlf) {
			return 0, c.err
		}
		c.newLine()
	}
	start, pos := 0, 0 // p[start:pos] is checked and waits to be copied out
	for pos < len(p) {
		// The line so far, up to the next CR, LF or NUL, looked for no
		// further than one octet past the longest allowed line so that a
		// message without line ends is refused early. IndexByte is
		// vectorised: three calls per line beat a loop over the octets.
		seg := p[pos:]
		if room := MaxLineLength + 1 - c.lineLen; len(seg) > room {
			seg = seg[:room]
		}
		i := bytes.IndexByte(seg, '\n')
		if i < 0 {
			i = len(seg)
		}
		if j := bytes.IndexByte(seg[:i], '\r'); j >= 0 {
			i = j
		}
		if j := bytes.IndexByte(seg[:i], 0); j >= 0 {
			i = j
		}
		if c.lineLen+i > MaxLineLength {
			c.err = &BodyError{Err: ErrLineTooLong, Line: c.line, Offset: c.in + int64(pos+MaxLineLength-c.lineLen), Limit: MaxLineLength}
			return 0, c.err
		}
		c.lineLen += i
		k := pos + i // the CR, LF or NUL, or len(p)
		if k == len(p) {
			pos = k
			break
		}
		switch {
		case p[k] == 0:
			c.err = &BodyError{Err: ErrNUL, Line: c.line, Offset: c.in + int64(k)}
			return 0, c.err
		case p[k] == '\r' && k+1 < len(p) && p[k+1] == '\n':
			pos = k + 2 // CRLF: already canonical, stays in the span
			c.newLine()
			if pos-start < maxSpan {
				continue
			}
			if !c.emit(p[start:pos]) {
				return 0, c.err
			}
		case p[k] == '\r' && k+1 == len(p):
			// Whether this CR has its LF is for the next Write to say.
			if !c.emit(p[start:k]) {
				return 0, c.err
			}
			c.pendingCR = true
			pos = k + 1
		default:
			// A bare LF or a bare CR: the line ends in CRLF instead.
			if !c.emit(p[start:k]) || !c.emit(crlf) {
				return 0, c.err
			}
			c.newLine()
			pos = k + 1
		}
		start = pos
	}
	if !c.emit(p[start:pos]) {
		return 0, c.err
	}
	c.in += int64(len(p))
	return total, nil
}

// newLine starts the next line.
func (c *canonicalizer) newLine() {
	c.line++
	c.lineLen = 0
}

// finish ends the pass: it ensures the final CRLF and flushes the file.
func (c *canonicalizer) finish() error {
	if c.err != nil {
		return c.err
	}
	if c.in == 0 {
		c.err = &BodyError{Err: ErrEmptyBody, Offset: -1}
		return c.err
	}
	if c.pendingCR || c.lineLen > 0 {
		c.pendingCR = false
		if !c.emit(crlf) {
			return c.err
		}
		c.newLine()
	}
	if c.w != nil {
		if err := c.w.Flush(); err != nil {
			c.err = fmt.Errorf("writing the message to a temporary file: %w", err)
			return c.err
		}
		c.w = nil
	}
	return nil
}

// scanCanonical reports whether p is whole canonical lines: it ends in
// LF, every LF has a CR before it and every CR an LF after it, no NUL, no
// line longer than MaxLineLength. It also counts the lines and reports an
// octet of 0x80 or above. Any other input, canonical or not, is left to
// Write's state machine (ok false), which says what is wrong and where.
//
// Every LF with a CR before it, and as many CRs as LFs, means every CR is
// one of those: so two counts (vectorised) and one IndexByte per line
// check the line ends, where the state machine makes three calls per line.
func scanCanonical(p []byte) (lines int64, eightBit, ok bool) {
	if len(p) == 0 || p[len(p)-1] != '\n' || bytes.IndexByte(p, 0) >= 0 {
		return 0, false, false
	}
	n := bytes.Count(p, crlf[1:])
	if bytes.Count(p, crlf[:1]) != n {
		return 0, false, false
	}
	for pos := 0; pos < len(p); {
		i := bytes.IndexByte(p[pos:], '\n')
		// i == 0: an LF at the start of p or right after another LF.
		if i == 0 || p[pos+i-1] != '\r' || i-1 > MaxLineLength {
			return 0, false, false
		}
		pos += i + 1
	}
	return int64(n), hasHighBit(p), true
}

// emit appends b to the output, spilling to a file when memory is full.
func (c *canonicalizer) emit(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if !c.eightBit && hasHighBit(b) {
		c.eightBit = true
	}
	return c.emitScanned(b)
}

// emitScanned is emit for b whose high bits are already counted in
// c.eightBit.
func (c *canonicalizer) emitScanned(b []byte) bool {
	if c.max > 0 && c.size+int64(len(b)) > c.max {
		c.err = &BodyError{Err: ErrTooLarge, Offset: -1, Limit: c.max}
		return false
	}
	c.size += int64(len(b))
	if c.w == nil && len(c.mem)+len(b) > cap(c.mem) && !c.grow(len(b)) {
		return false
	}
	if c.w != nil {
		if _, err := c.w.Write(b); err != nil {
			c.err = fmt.Errorf("writing the message to a temporary file: %w", err)
			return false
		}
		return true
	}
	c.mem = append(c.mem, b...)
	return true
}

// grow makes room for n more octets in memory, or moves the output to a
// file when that would pass the spill limit. Growth is by doubling, capped
// at the limit, so memory never holds more than spill octets of output.
func (c *canonicalizer) grow(n int) bool {
	need := int64(len(c.mem)) + int64(n)
	if c.spill >= 0 && need > c.spill {
		return c.spillToFile()
	}
	newCap := max(2*int64(cap(c.mem)), need, 4096)
	if c.spill >= 0 {
		newCap = min(newCap, c.spill)
	}
	m := make([]byte, len(c.mem), newCap)
	copy(m, c.mem)
	c.mem = m
	return true
}

// spillToFile moves the output so far to a new temporary file and sends the
// rest there. The file is unlinked at once where the system allows it (it
// lives on through the open descriptor), so nothing is left behind even if
// the process dies; elsewhere Body.Close removes it.
func (c *canonicalizer) spillToFile() bool {
	f, err := os.CreateTemp(c.tempDir, "mailroute-message-*")
	if err != nil {
		c.err = fmt.Errorf("creating a temporary file for a large message: %w", err)
		return false
	}
	c.file, c.path = f, f.Name()
	if os.Remove(c.path) == nil {
		c.path = ""
	}
	if len(c.mem) > 0 {
		if _, err := f.Write(c.mem); err != nil {
			c.err = fmt.Errorf("writing the message to a temporary file: %w", err)
			return false
		}
	}
	c.mem = nil
	c.w = bufio.NewWriterSize(f, fileBufferSize)
	return true
}

// discard releases the output after an error.
func (c *canonicalizer) discard() {
	c.mem = nil
	if c.file != nil {
		c.file.Close()
		if c.path != "" {
			os.Remove(c.path)
		}
		c.file, c.path, c.w = nil, "", nil
	}
}

// hasHighBit reports whether any octet of b is 0x80 or above, eight octets
// at a time or more.
func hasHighBit(b []byte) bool {
	for len(b) >= 32 { // four words per test: fewer branches on long runs
		w := binary.LittleEndian.Uint64(b) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:])
		if w&0x8080808080808080 != 0 {
			return true
		}
		b = b[32:]
	}
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
