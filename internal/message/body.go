package message

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// DefaultSpillOver is how many octets of a message stay in memory before
// NewBody moves it to a temporary file, when BodyOptions.SpillOver is 0.
const DefaultSpillOver = 8 << 20

// BodyOptions tunes NewBody. The zero value is ready to use.
type BodyOptions struct {
	// MaxSize is the largest canonical message accepted, in octets; larger
	// gives an error wrapping ErrTooLarge. 0 or negative: no limit.
	MaxSize int64
	// SpillOver is how many octets are kept in memory before the message
	// moves to a temporary file. 0: DefaultSpillOver; negative: never
	// spill.
	SpillOver int64
	// TempDir is where spill files go; "" means os.TempDir().
	TempDir string
}

func (o *BodyOptions) spillOver() int64 {
	if o.SpillOver == 0 {
		return DefaultSpillOver
	}
	return o.SpillOver
}

// Body is a canonical message (see the package documentation), held in
// memory or, above BodyOptions.SpillOver, in a temporary file. It is
// immutable once made: any number of goroutines may read it at once through
// their own Reader. Close it to release the file.
type Body struct {
	mem      []byte   // the message, when it is held in memory
	file     *os.File // the message, when it spilled
	path     string   // the file's name when it could not be unlinked early
	size     int64
	eightBit bool
	closed   atomic.Bool
	home     *bodyAndCanon // the allocation b lives in, for Release
}

// readBufPool holds the read buffers of NewBody for readers that cannot
// write themselves, so that a message costs no read buffer of its own.
var readBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// NewBody reads r to its end and returns the canonical message. It makes
// one streaming pass: every line ends in CRLF (a bare LF or a bare CR
// becomes CRLF, so "\r\r\n" is two line ends), a final CRLF is added when
// missing, and the result never contains a CR without an LF after it nor an
// LF without a CR before it. It refuses, with an error that says where and
// wraps the sentinel: empty input (ErrEmptyBody), a NUL octet (ErrNUL), a
// line longer than MaxLineLength (ErrLineTooLong) and a canonical message
// larger than opts.MaxSize (ErrTooLarge). Lines starting with "." are left
// alone: dot-stuffing is the SMTP engine's job.
//
// When r can report its remaining length (bytes.Reader, bytes.Buffer,
// strings.Reader) the output is allocated once at the right size, or goes
// straight to a file when it is larger than the spill limit; when r can
// write itself (io.WriterTo) its bytes are read in place, without a copy.
// On error nothing is left behind: no file, no memory held.
func NewBody(r io.Reader, opts BodyOptions) (*Body, error) {
	// The state machine escapes (it is handed to r.WriteTo as an
	// io.Writer), so it shares one allocation with the Body it builds,
	// taken with its memory from what Release handed back when it can be.
	// Afterwards it is zeroed; its few dozen octets are the cost.
	bc, _ := bodyPool.Get().(*bodyAndCanon)
	if bc == nil {
		bc = new(bodyAndCanon)
	}
	reuse := bc.b.mem[:0] // memory a released Body handed back, if any
	bc.b = Body{}
	c := &bc.c
	*c = canonicalizer{spill: opts.spillOver(), max: opts.MaxSize, tempDir: opts.TempDir, line: 1}
	if n, ok := remaining(r); ok {
		if n > 0 {
			// Room for LF→CRLF on lines of 32 octets on average and a
			// final CRLF; more lines than that cost one regrowth.
			want := n + n/32 + 2
			switch {
			case c.max > 0 && n > c.max:
				// Canonicalising never shrinks a message: refuse now.
				return nil, &BodyError{Err: ErrTooLarge, Offset: -1, Limit: c.max}
			case c.spill >= 0 && n > c.spill:
				if !c.spillToFile() {
					c.discard()
					return nil, c.err
				}
			case int64(cap(reuse)) >= want && (c.spill < 0 || int64(cap(reuse)) <= c.spill):
				c.mem = reuse // never more room than the spill limit
			case c.spill >= 0:
				c.mem = make([]byte, 0, min(want, c.spill))
			default:
				c.mem = make([]byte, 0, want)
			}
		}
	}
	if err := c.readFrom(r); err != nil {
		c.discard()
		return nil, err
	}
	if err := c.finish(); err != nil {
		c.discard()
		return nil, err
	}
	b := &bc.b
	b.mem, b.file, b.path, b.size, b.eightBit = c.mem, c.file, c.path, c.size, c.eightBit
	b.home = bc
	*c = canonicalizer{}
	return b, nil
}

// bodyAndCanon is a Body and the state machine that builds it, allocated
// together: the state machine escapes (it is handed to r.WriteTo as an
// io.Writer). Released Bodies come back through bodyPool with their
// memory, so that a process sending message after message allocates
// neither.
type bodyAndCanon struct {
	b Body
	c canonicalizer
}

var bodyPool sync.Pool // of *bodyAndCanon

// maxPooled is the largest memory a released Body hands back for reuse:
// enough for the messages sent back to back, not so much that a rare
// large one stays held.
const maxPooled = 256 << 10

// remaining reports how many octets r has left, for the readers whose count
// is known to be exact.
func remaining(r io.Reader) (int64, bool) {
	switch r := r.(type) {
	case *bytes.Reader:
		return int64(r.Len()), true
	case *bytes.Buffer:
		return int64(r.Len()), true
	case *strings.Reader:
		return int64(r.Len()), true
	}
	return 0, false
}

// readFrom feeds all of r to c. A failure of r is wrapped so that it cannot
// be mistaken for a problem with the message.
func (c *canonicalizer) readFrom(r io.Reader) error {
	if wt, ok := r.(io.WriterTo); ok {
		_, err := wt.WriteTo(c)
		switch {
		case c.err != nil:
			return c.err
		case err != nil:
			return fmt.Errorf("reading the message: %w", err)
		}
		return nil
	}
	bp := readBufPool.Get().(*[]byte)
	defer readBufPool.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the message: %w", err)
		}
	}
}

// Size is the length of the canonical message in octets, as the SIZE
// parameter of MAIL FROM (RFC 1870) declares it before dot-stuffing.
func (b *Body) Size() int64 { return b.size }

// EightBit reports whether any octet is 0x80 or above: the message needs
// BODY=8BITMIME (RFC 6152) or SMTPUTF8.
func (b *Body) EightBit() bool { return b.eightBit }

// Reader returns a new reader of the message from its start. Each call is
// independent of the others and of the Body, so concurrent deliveries read
// the same bytes without copying them. After Close it returns a reader that
// fails with ErrClosed; readers obtained before Close may fail after it.
func (b *Body) Reader() io.Reader {
	switch {
	case b.closed.Load():
		return errReader{ErrClosed}
	case b.file != nil:
		return io.NewSectionReader(b.file, 0, b.size)
	}
	return bytes.NewReader(b.mem)
}

// ReaderInto is Reader with r, the caller's, reset over the message when it
// is held in memory (no allocation); otherwise it returns what Reader
// returns. r must not be in use by another delivery.
func (b *Body) ReaderInto(r *bytes.Reader) io.Reader {
	if b.file != nil || b.closed.Load() {
		return b.Reader()
	}
	r.Reset(b.mem)
	return r
}

// Bytes returns the message when it is held in memory, and false when it
// spilled to a file or the Body is closed. The slice must not be modified.
func (b *Body) Bytes() ([]byte, bool) {
	if b.file != nil || b.closed.Load() {
		return nil, false
	}
	return b.mem, true
}

// Close releases the temporary file, if there is one. It is safe to call
// more than once; later calls return nil.
func (b *Body) Close() error {
	if b.closed.Swap(true) || b.file == nil {
		return nil
	}
	err := b.file.Close()
	if b.path != "" {
		if rerr := os.Remove(b.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// Release is Close, and then hands the Body's memory back for reuse by a
// later NewBody. Neither b nor any reader or slice obtained from it may be
// used afterwards, by anyone: the caller must know that nothing kept them
// (as Send does when no queue took the message). Calling it twice, or
// after Close, is a mistake.
func (b *Body) Release() error {
	err := b.Close()
	if b.file != nil || cap(b.mem) > maxPooled {
		return err
	}
	bc := b.home
	if bc == nil {
		return err
	}
	bc.b = Body{mem: b.mem[:0]}
	bodyPool.Put(bc)
	return err
}

// errReader fails every Read.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
