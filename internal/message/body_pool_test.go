package message

import (
	"bytes"
	"strings"
	"testing"
)

// A released Body's memory serves the next NewBody: a message read whole
// from a bytes.Reader then costs no allocation, and every Body still holds
// exactly its own message, whatever the sizes before it, within its spill
// limit.
func TestBodyRelease(t *testing.T) {
	small := crlfMessage(2 << 10)
	for _, tc := range []struct {
		name string
		in   string
		opts BodyOptions
	}{
		{"canonical", string(small), BodyOptions{}},
		{"lf", message(3 << 10), BodyOptions{}},
		{"larger than before", message(100 << 10), BodyOptions{}},
		{"smaller again", "Subject: x\r\n\r\nhi\r\n", BodyOptions{}},
		{"spill limit below the pooled memory", message(3 << 10), BodyOptions{SpillOver: 1 << 10, TempDir: t.TempDir()}},
		{"no spill", message(5 << 10), BodyOptions{SpillOver: -1}},
		{"bare cr", "a\rb\r\n.\r\n", BodyOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := canon(t, strings.NewReader(tc.in), BodyOptions{SpillOver: -1})
			if err != nil {
				t.Fatal(err)
			}
			for range 3 { // after a release of the same size and of others
				b, err := NewBody(strings.NewReader(tc.in), tc.opts)
				if err != nil {
					t.Fatal(err)
				}
				got := readAll(t, b)
				if got != want {
					t.Fatalf("body %q, want %q", got, want)
				}
				if mem, ok := b.Bytes(); ok && tc.opts.SpillOver > 0 && int64(cap(mem)) > tc.opts.SpillOver {
					t.Fatalf("memory of %d octets held, the spill limit is %d", cap(mem), tc.opts.SpillOver)
				}
				if b.Size() != int64(len(want)) {
					t.Fatalf("size %d, want %d", b.Size(), len(want))
				}
				b.Release()
			}
		})
	}
	r := bytes.NewReader(small)
	n := testing.AllocsPerRun(100, func() {
		r.Reset(small)
		b, err := NewBody(r, BodyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b.Release()
	})
	if n != 0 && !raceEnabled {
		t.Errorf("%v allocations per NewBody and Release, want 0", n)
	}
}

func readAll(t *testing.T, b *Body) string {
	t.Helper()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(b.Reader()); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}
