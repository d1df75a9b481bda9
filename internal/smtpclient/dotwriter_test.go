package smtpclient

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// stuff runs data through a dotWriter, written in pieces of size step (0 =
// all at once), and returns what would go on the wire.
func stuff(t testing.TB, data []byte, step int) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, 16)
	var d dotWriter
	d.reset(bw)
	if step <= 0 {
		step = len(data) + 1
	}
	for p := data; len(p) > 0; {
		n := min(step, len(p))
		if w, err := d.Write(p[:n]); err != nil || w != n {
			t.Fatalf("Write = %d, %v", w, err)
		}
		p = p[n:]
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	if d.n != int64(len(data)) {
		t.Fatalf("counted %d octets, wrote %d", d.n, len(data))
	}
	return out.Bytes()
}

// unstuff reverses stuff the way a receiver does: it checks the wire ends
// with the terminator, that no earlier line is a lone ".", and removes one
// leading dot from each line (a line starting after any LF).
func unstuff(t testing.TB, wire []byte) []byte {
	if !bytes.HasSuffix(wire, []byte("\r\n.\r\n")) && !bytes.Equal(wire, []byte(".\r\n")) {
		t.Fatalf("wire %q lacks the terminator", wire)
	}
	body := wire[:len(wire)-3]
	var out []byte
	for len(body) > 0 {
		n := len(body)
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			n = i + 1
		}
		line := body[:n]
		body = body[n:]
		if line[0] == '.' {
			if len(line) < 2 || line[1] != '.' {
				t.Fatalf("unstuffed dot line %q in %q", line, wire)
			}
			line = line[1:]
		}
		out = append(out, line...)
	}
	return out
}

func TestDotWriter(t *testing.T) {
	tests := []struct{ in, wire string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{"..x\r\n", "...x\r\n.\r\n"},
		{"a\r\n.b\r\n", "a\r\n..b\r\n.\r\n"},
		{"a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
		{"a.b\r\n", "a.b\r\n.\r\n"},
		{"a\r\n.", "a\r\n..\r\n.\r\n"},
		{"a\r", "a\r\r\n.\r\n"},
		{"a\n.\r\n", "a\n..\r\n.\r\n"}, // bare LF starts a line: no smuggled end of data
		{"a\r.\r\n", "a\r.\r\n.\r\n"},
	}
	for _, tt := range tests {
		for _, step := range []int{0, 1, 2, 3} {
			if got := stuff(t, []byte(tt.in), step); string(got) != tt.wire {
				t.Errorf("stuff(%q, step %d) = %q, want %q", tt.in, step, got, tt.wire)
			}
		}
	}
}

func TestCopyBody(t *testing.T) {
	src := strings.Repeat("line one\r\n.dot line\r\n", 1000)
	for name, r := range map[string]io.Reader{
		"WriterTo":  strings.NewReader(src),
		"plain":     struct{ io.Reader }{strings.NewReader(src)},
		"one byte":  iotest.OneByteReader(strings.NewReader(src)),
		"half read": iotest.HalfReader(strings.NewReader(src)),
	} {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		var d dotWriter
		d.reset(bw)
		if err := d.copyBody(r, make([]byte, 512)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d.close()
		bw.Flush()
		if got := unstuff(t, out.Bytes()); string(got) != src {
			t.Errorf("%s: round trip differs", name)
		}
	}

	// A failing reader is reported as such, not as a network error.
	boom := errors.New("boom")
	var d dotWriter
	d.reset(bufio.NewWriter(io.Discard))
	err := d.copyBody(iotest.ErrReader(boom), make([]byte, 16))
	var bre *bodyReadError
	if !errors.As(err, &bre) || !errors.Is(err, boom) {
		t.Errorf("reader error = %v", err)
	}
	// A failing writer is reported as the write error.
	d.reset(bufio.NewWriterSize(errWriter{boom}, 16))
	err = d.copyBody(strings.NewReader(src), nil)
	if errors.As(err, &bre) || !errors.Is(err, boom) {
		t.Errorf("writer error = %v", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// FuzzDotWriter: for any input and any write size, the wire has exactly one
// end-of-data line, at the end, and unstuffing gives back the input (plus
// the CRLF added when it did not end with one).
func FuzzDotWriter(f *testing.F) {
	for _, s := range []string{"", ".", "\r\n.\r\n", "a\r\n..\r\n", "\n.\n", ".\r", "x\r\n.\r\n.\r\n"} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		wire := stuff(t, data, int(step))
		want := data
		if len(data) > 0 && !bytes.HasSuffix(data, []byte("\r\n")) {
			want = append(append([]byte(nil), data...), "\r\n"...)
		}
		if got := unstuff(t, wire); !bytes.Equal(got, want) {
			t.Fatalf("unstuff(stuff(%q)) = %q", data, got)
		}
	})
}
