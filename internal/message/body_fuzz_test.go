package message

import (
	"bytes"
	"strings"
	"testing"
	"testing/iotest"
)

// stripLineEnds removes every CR and LF.
func stripLineEnds(s string) string {
	return strings.NewReplacer("\r", "", "\n", "").Replace(s)
}

func FuzzNewBody(f *testing.F) {
	for _, s := range []string{
		"a\nb", "a\rb", "a\r\nb", "a\r\r\nb", "\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n",
		"\r\n.\r", "x\r\n.\r\nMAIL FROM:<evil@x>\r\n", "", "\x00", "ü\xff\r",
		strings.Repeat("x", 998) + "\r" + strings.Repeat("y", 998),
		strings.Repeat("x", 999),
		// Whole canonical input takes scanCanonical's fast path; these
		// are canonical but for one thing, or just at a limit.
		"a\r\nb\r\n", "\r\n", "\r\n\r\n", "\n\r\n", "\r\r\n\n", "a\r\n\x00\r\n", "é\r\n",
		strings.Repeat("x", 998) + "\r\n", strings.Repeat("x", 999) + "\r\n",
		"a\r\n" + strings.Repeat("y", 999) + "\r\n",
	} {
		f.Add([]byte(s), int16(0))
	}
	// One directory for the whole run (a t.TempDir per input slows the
	// fuzzer to a crawl), checked empty after every input.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, in []byte, spill int16) {
		// spill exercises the file path as well: 0 (default), negative
		// (never) and small positive values all occur.
		opts := BodyOptions{SpillOver: int64(spill), TempDir: dir}
		defer assertEmptyDir(t, dir)
		out, err := canon(t, bytes.NewReader(in), opts)
		one, oneErr := canon(t, iotest.OneByteReader(bytes.NewReader(in)), opts)
		if (err == nil) != (oneErr == nil) || out != one || err != nil && err.Error() != oneErr.Error() {
			t.Fatalf("one-byte reads differ: %q, %v; whole: %q, %v", one, oneErr, out, err)
		}
		// The whole input may take the fast path (scanCanonical), the
		// one-byte reads never do: they must agree on 8-bit content too.
		if err == nil && eightBitOf(t, in, opts) != eightBitOf(t, []byte(out), BodyOptions{}) {
			t.Fatalf("EightBit differs between %q and its canonical form", in)
		}
		if err != nil {
			return
		}
		for i := 0; i < len(out); i++ {
			switch {
			case out[i] == '\r' && (i+1 == len(out) || out[i+1] != '\n'):
				t.Fatalf("bare CR at %d in %q", i, out)
			case out[i] == '\n' && (i == 0 || out[i-1] != '\r'):
				t.Fatalf("bare LF at %d in %q", i, out)
			}
		}
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("%q does not end with CRLF", out)
		}
		if stripLineEnds(out) != stripLineEnds(string(in)) {
			t.Fatalf("canonicalising %q invented or lost octets: %q", in, out)
		}
		again, err := canon(t, strings.NewReader(out), BodyOptions{})
		if err != nil || again != out {
			t.Fatalf("not idempotent: %q → %q → %q, %v", in, out, again, err)
		}
	})
}

func eightBitOf(t *testing.T, in []byte, opts BodyOptions) bool {
	t.Helper()
	b, err := NewBody(iotest.OneByteReader(bytes.NewReader(in)), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	whole, err := NewBody(bytes.NewReader(in), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer whole.Release()
	if whole.EightBit() != b.EightBit() {
		t.Fatalf("EightBit %v whole, %v in one-byte reads, for %q", whole.EightBit(), b.EightBit(), in)
	}
	return b.EightBit()
}
