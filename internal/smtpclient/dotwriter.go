package smtpclient

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// dotWriter writes message data for the DATA command (RFC 5321 §4.5.2):
// every line that starts with "." gets another "." in front, and close adds
// the terminating "." line (after a CRLF when the data does not end with
// one). A line starts at the beginning of the data and after every LF, bare
// LF included, so that data that was not canonicalised still cannot end the
// transaction early on a lax server ("\n.\r\n" smuggling).
//
// Writes go to a bufio.Writer whose underlying writer refreshes the write
// deadline on each flush.
type dotWriter struct {
	w       *bufio.Writer
	bol     bool // next byte starts a line
	lastCR  bool // last byte written was '\r'
	endCRLF bool // data so far ends with "\r\n"
	err     error
	n       int64 // input octets accepted
}

func (d *dotWriter) reset(w *bufio.Writer) {
	*d = dotWriter{w: w, bol: true, endCRLF: true}
}

func (d *dotWriter) Write(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	written := 0
	for len(p) > 0 {
		if d.bol && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				d.err = err
				return written, err
			}
		}
		chunk := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			chunk = p[:i+1]
			d.bol = true
		} else {
			d.bol = false
		}
		n, err := d.w.Write(chunk)
		written += n
		if err != nil {
			d.err = err
			return written, err
		}
		switch {
		case len(chunk) >= 2:
			d.endCRLF = chunk[len(chunk)-2] == '\r' && chunk[len(chunk)-1] == '\n'
		default:
			d.endCRLF = d.lastCR && chunk[0] == '\n'
		}
		d.lastCR = chunk[len(chunk)-1] == '\r'
		p = p[len(chunk):]
	}
	d.n += int64(written)
	return written, nil
}

var crlfDot = []byte("\r\n.\r\n")

// close writes the end-of-data line. It does not flush.
func (d *dotWriter) close() error {
	if d.err != nil {
		return d.err
	}
	end := crlfDot
	if d.endCRLF {
		end = crlfDot[2:]
	}
	if _, err := d.w.Write(end); err != nil {
		d.err = err
		return err
	}
	return nil
}

// errBodyRead marks a failure reading the caller's body (not the network).
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "reading message body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// copyBody copies src into d using scratch (no allocation) unless src can
// write itself. A failure reading src comes back as *bodyReadError; a
// failure writing comes back as the writer's error.
func (d *dotWriter) copyBody(src io.Reader, scratch []byte) error {
	if wt, ok := src.(io.WriterTo); ok {
		_, err := wt.WriteTo(d)
		if err != nil && !errors.Is(err, d.err) {
			return &bodyReadError{err}
		}
		return err
	}
	for {
		n, rerr := src.Read(scratch)
		if n > 0 {
			if _, err := d.Write(scratch[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return &bodyReadError{rerr}
		}
	}
}
