package message

import (
	"bytes"
	"io"
	"testing"
)

func benchmarkNewBody(b *testing.B, in []byte, opts BodyOptions) {
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		body, err := NewBody(bytes.NewReader(in), opts)
		if err != nil {
			b.Fatal(err)
		}
		body.Close()
	}
}

// crlf turns LF line ends into CRLF: the already-canonical case.
func crlfMessage(n int) []byte {
	return bytes.ReplaceAll([]byte(message(n)), []byte("\n"), []byte("\r\n"))
}

func BenchmarkNewBody2KiB(b *testing.B) { benchmarkNewBody(b, crlfMessage(2<<10), BodyOptions{}) }

func BenchmarkNewBody2KiBLF(b *testing.B) { benchmarkNewBody(b, []byte(message(2<<10)), BodyOptions{}) }

// BenchmarkNewBody2KiBStream reads through a reader that neither knows its
// length nor writes itself, like a net.Conn or a pipe.
func BenchmarkNewBody2KiBStream(b *testing.B) {
	in := crlfMessage(2 << 10)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		body, err := NewBody(struct{ io.Reader }{bytes.NewReader(in)}, BodyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		body.Close()
	}
}

func BenchmarkNewBody25MiBMemory(b *testing.B) {
	benchmarkNewBody(b, crlfMessage(25<<20), BodyOptions{SpillOver: -1})
}

func BenchmarkNewBody25MiBSpill(b *testing.B) {
	benchmarkNewBody(b, crlfMessage(25<<20), BodyOptions{TempDir: b.TempDir()})
}

func BenchmarkNewBody25MiBSpillLF(b *testing.B) {
	benchmarkNewBody(b, []byte(message(25<<20)), BodyOptions{TempDir: b.TempDir()})
}
