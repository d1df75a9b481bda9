package message

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// readers feeds the same input to NewBody in every shape that matters: whole
// (bytes.Reader, which writes itself), one byte per Read, and half of each
// requested length, so that every CR/LF pair is also split across reads.
var readers = map[string]func(string) io.Reader{
	"bytes":   func(s string) io.Reader { return bytes.NewReader([]byte(s)) },
	"onebyte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
	"half":    func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
	"plain":   func(s string) io.Reader { return struct{ io.Reader }{strings.NewReader(s)} },
}

// canon runs NewBody and returns the canonical bytes.
func canon(t testing.TB, r io.Reader, opts BodyOptions) (string, error) {
	t.Helper()
	b, err := NewBody(r, opts)
	if err != nil {
		if b != nil {
			t.Fatalf("NewBody returned a Body with error %v", err)
		}
		return "", err
	}
	defer b.Close()
	out, err := io.ReadAll(b.Reader())
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	if int64(len(out)) != b.Size() {
		t.Fatalf("Size() = %d, but the reader gave %d octets", b.Size(), len(out))
	}
	if want := bytes.ContainsFunc(out, func(r rune) bool { return r >= 0x80 }); want != b.EightBit() {
		t.Fatalf("EightBit() = %v for %q", b.EightBit(), out)
	}
	return string(out), nil
}

func TestNewBodyCanonical(t *testing.T) {
	line998 := strings.Repeat("x", 998)
	tests := []struct {
		in, want string
	}{
		{"a\nb", "a\r\nb\r\n"},
		{"a\rb", "a\r\nb\r\n"},
		{"a\r\nb", "a\r\nb\r\n"},
		{"a\r\r\nb", "a\r\n\r\nb\r\n"},
		{"a\n\rb", "a\r\n\r\nb\r\n"},
		{"\n.\n", "\r\n.\r\n"},
		{"\n.\r\n", "\r\n.\r\n"},
		{"\r\n.\n", "\r\n.\r\n"},
		{"\r.\r\n", "\r\n.\r\n"},
		{"\r\n.\r", "\r\n.\r\n"},
		{"x\r\n.\r\nMAIL FROM:<evil@x>\r\n", "x\r\n.\r\nMAIL FROM:<evil@x>\r\n"},
		{"x\n.\nMAIL FROM:<evil@x>\n", "x\r\n.\r\nMAIL FROM:<evil@x>\r\n"},
		{"a", "a\r\n"},
		{"\n", "\r\n"},
		{"\r", "\r\n"},
		{"\r\n", "\r\n"},
		{"\r\r", "\r\n\r\n"},
		{"\n\n", "\r\n\r\n"},
		{"\r\n\r\n", "\r\n\r\n"},
		{"\r\r\r\n", "\r\n\r\n\r\n"},
		{"Subject: hi\n\nbody", "Subject: hi\r\n\r\nbody\r\n"},
		{"ü\xffé\n", "ü\xffé\r\n"},
		{line998, line998 + "\r\n"},
		{line998 + "\n" + line998, line998 + "\r\n" + line998 + "\r\n"},
		{line998 + "\r" + line998 + "\r", line998 + "\r\n" + line998 + "\r\n"},
	}
	for _, tt := range tests {
		for name, mk := range readers {
			got, err := canon(t, mk(tt.in), BodyOptions{})
			if err != nil || got != tt.want {
				t.Errorf("%s: NewBody(%q) = %q, %v; want %q", name, tt.in, got, err, tt.want)
			}
		}
	}
}

func TestNewBodyErrors(t *testing.T) {
	line999 := strings.Repeat("x", 999)
	tests := []struct {
		in       string
		opts     BodyOptions
		sentinel error
		line     int64
		offset   int64
		text     string
	}{
		{in: "", sentinel: ErrEmptyBody, offset: -1, text: "empty"},
		{in: "\x00", sentinel: ErrNUL, line: 1, offset: 0, text: "line 1 (input offset 0)"},
		{in: "a\r\nb\nc\x00d", sentinel: ErrNUL, line: 3, offset: 6, text: "line 3"},
		{in: "a\r\x00", sentinel: ErrNUL, line: 2, offset: 2},
		{in: line999, sentinel: ErrLineTooLong, line: 1, offset: 998, text: "line 1 is longer than 998"},
		{in: line999 + "\r\n", sentinel: ErrLineTooLong, line: 1, offset: 998},
		{in: "a\n\r\n" + line999, sentinel: ErrLineTooLong, line: 3, offset: 4 + 998},
		{in: "abc", opts: BodyOptions{MaxSize: 4}, sentinel: ErrTooLarge, offset: -1, text: "limit of 4 octets"},
		{in: "a\nb\n", opts: BodyOptions{MaxSize: 5}, sentinel: ErrTooLarge, offset: -1},
	}
	for _, tt := range tests {
		for name, mk := range readers {
			_, err := canon(t, mk(tt.in), tt.opts)
			var be *BodyError
			if !errors.Is(err, tt.sentinel) || !errors.As(err, &be) {
				t.Errorf("%s: NewBody(%.20q) = %v; want %v", name, tt.in, err, tt.sentinel)
				continue
			}
			if be.Line != tt.line || be.Offset != tt.offset {
				t.Errorf("%s: NewBody(%.20q) = %v at line %d offset %d; want line %d offset %d", name, tt.in, err, be.Line, be.Offset, tt.line, tt.offset)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("%s: NewBody(%.20q): error %q does not mention %q", name, tt.in, err, tt.text)
			}
		}
	}
}

func TestNewBodyMaxSizeExact(t *testing.T) {
	// "a\nb" is 6 octets canonical: the limit is on the canonical size.
	for name, mk := range readers {
		if got, err := canon(t, mk("a\nb"), BodyOptions{MaxSize: 6}); err != nil || got != "a\r\nb\r\n" {
			t.Errorf("%s: MaxSize 6: %q, %v", name, got, err)
		}
		if _, err := canon(t, mk("a\nb"), BodyOptions{MaxSize: 5}); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: MaxSize 5: %v, want ErrTooLarge", name, err)
		}
	}
}

type failingReader struct{ n int }

var errBroken = errors.New("broken pipe")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errBroken
	}
	r.n--
	p[0] = 'a'
	return 1, nil
}

func TestNewBodyReadError(t *testing.T) {
	dir := t.TempDir()
	_, err := NewBody(&failingReader{n: 100}, BodyOptions{SpillOver: 10, TempDir: dir})
	if !errors.Is(err, errBroken) || !strings.Contains(err.Error(), "reading the message") {
		t.Fatalf("NewBody = %v; want the read error, said to be one", err)
	}
	assertEmptyDir(t, dir)
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("%s left behind in %s", e.Name(), dir)
	}
}

// message is a plain-text mail of about n octets with LF line ends, the way
// Go programs tend to write them.
func message(n int) string {
	var b strings.Builder
	b.WriteString("From: a@example.com\nTo: b@example.org\nSubject: test\n\n")
	for b.Len() < n {
		b.WriteString("The quick brown fox jumps over the lazy dog, again and again and again.\n")
	}
	return b.String()
}

func TestNewBodySpill(t *testing.T) {
	in := message(100_000) + "\r.\r\n\rtrailing"
	want, err := canon(t, strings.NewReader(in), BodyOptions{SpillOver: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, spill := range []int64{1, 100, 4096, 50_000, int64(len(in) - 1)} {
		for name, mk := range readers {
			dir := t.TempDir()
			b, err := NewBody(mk(in), BodyOptions{SpillOver: spill, TempDir: dir})
			if err != nil {
				t.Fatalf("%s spill %d: %v", name, spill, err)
			}
			if _, ok := b.Bytes(); ok {
				t.Errorf("%s spill %d: Bytes() reports the message in memory", name, spill)
			}
			got, err := io.ReadAll(b.Reader())
			if err != nil || string(got) != want || b.Size() != int64(len(want)) {
				t.Errorf("%s spill %d: spilled body differs (%d octets, Size %d, %v), want %d octets", name, spill, len(got), b.Size(), err, len(want))
			}
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := b.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			assertEmptyDir(t, dir)
			if _, err := io.ReadAll(b.Reader()); !errors.Is(err, ErrClosed) {
				t.Errorf("Reader after Close: %v, want ErrClosed", err)
			}
		}
	}
}

func TestNewBodyInMemory(t *testing.T) {
	in := message(10_000)
	b, err := NewBody(strings.NewReader(in), BodyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := b.Bytes()
	if !ok || string(got) != strings.ReplaceAll(in, "\n", "\r\n") {
		t.Fatalf("Bytes() = %d octets, %v", len(got), ok)
	}
	b.Close()
	if _, ok := b.Bytes(); ok {
		t.Error("Bytes() after Close still reports the message")
	}
}

func TestNewBodyErrorLeavesNoFile(t *testing.T) {
	for _, in := range []string{message(50_000) + "\x00", message(50_000) + strings.Repeat("x", 1000)} {
		for name, mk := range readers {
			dir := t.TempDir()
			if _, err := NewBody(mk(in), BodyOptions{SpillOver: 1000, TempDir: dir}); err == nil {
				t.Fatalf("%s: no error", name)
			}
			assertEmptyDir(t, dir)
		}
	}
	dir := t.TempDir()
	if _, err := NewBody(strings.NewReader(message(50_000)), BodyOptions{SpillOver: 1000, MaxSize: 20_000, TempDir: dir}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("MaxSize: %v", err)
	}
	if _, err := NewBody(iotest.HalfReader(strings.NewReader(message(50_000))), BodyOptions{SpillOver: 1000, MaxSize: 20_000, TempDir: dir}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("MaxSize: %v", err)
	}
	assertEmptyDir(t, dir)
}

func TestNewBodyBadTempDir(t *testing.T) {
	_, err := NewBody(strings.NewReader(message(5000)), BodyOptions{SpillOver: 100, TempDir: "/nonexistent/mailroute"})
	if err == nil || !strings.Contains(err.Error(), "temporary file") {
		t.Fatalf("NewBody with a missing TempDir = %v", err)
	}
}

func TestBodyConcurrentReaders(t *testing.T) {
	in := message(300_000)
	want := strings.ReplaceAll(in, "\n", "\r\n")
	for _, spill := range []int64{-1, 10_000} {
		b, err := NewBody(strings.NewReader(in), BodyOptions{SpillOver: spill, TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				got, err := io.ReadAll(iotest.HalfReader(b.Reader()))
				if err != nil || string(got) != want {
					t.Errorf("spill %d: concurrent reader got %d octets, %v", spill, len(got), err)
				}
			})
		}
		wg.Wait()
		b.Close()
	}
}

func TestNewBodyAllocations(t *testing.T) {
	in := []byte(message(2048))
	allocs := testing.AllocsPerRun(100, func() {
		b, err := NewBody(bytes.NewReader(in), BodyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
	})
	// bytes.NewReader, the output buffer, the Body.
	if allocs > 3 {
		t.Fatalf("NewBody of a 2 KiB message: %v allocations", allocs)
	}
}
