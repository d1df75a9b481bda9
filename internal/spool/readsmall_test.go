package spool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// lyingLen is a reader whose Len says n whatever it holds.
type lyingLen struct {
	io.Reader
	n int
}

func (l lyingLen) Len() int { return l.n }

// TestReadSmall reads bodies through readSmall as Enqueue does: whatever
// a reader's Len says, the bytes read are exactly its bytes up to
// journalBodyMax+1 (the rest stays in the reader, for the large path).
func TestReadSmall(t *testing.T) {
	big := testBody(journalBodyMax+10, 1)
	for _, tc := range []struct {
		name string
		r    func() io.Reader
		want []byte
		rest int // octets left in the reader
	}{
		{"bytes.Reader", func() io.Reader { return bytes.NewReader([]byte("hello\r\n")) }, []byte("hello\r\n"), 0},
		{"empty", func() io.Reader { return strings.NewReader("") }, []byte{}, 0},
		{"no Len", func() io.Reader { return io.MultiReader(strings.NewReader("a"), strings.NewReader("b")) }, []byte("ab"), 0},
		{"Len too short", func() io.Reader { return lyingLen{strings.NewReader("0123456789"), 3} }, []byte("0123456789"), 0},
		{"Len too long", func() io.Reader { return lyingLen{strings.NewReader("0123"), 100} }, []byte("0123"), 0},
		{"exactly the most", func() io.Reader { return bytes.NewReader(big[:journalBodyMax]) }, big[:journalBodyMax], 0},
		{"over the most", func() io.Reader { return bytes.NewReader(big) }, big[:journalBodyMax+1], 9},
		{"over, Len lying", func() io.Reader { return lyingLen{bytes.NewReader(big), 10} }, big[:journalBodyMax+1], 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r()
			got, err := readSmall(context.Background(), r)
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("readSmall = %d octets, %v; want %d", len(got), err, len(tc.want))
			}
			if rest, _ := io.ReadAll(r); len(rest) != tc.rest {
				t.Errorf("%d octets left in the reader, want %d", len(rest), tc.rest)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := readSmall(ctx, strings.NewReader("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("readSmall with a cancelled context = %v", err)
	}
}
