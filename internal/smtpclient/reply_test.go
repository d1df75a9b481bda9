package smtpclient

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

func parse(s string) (Reply, error) {
	rep, _, err := readReply(bufio.NewReaderSize(strings.NewReader(s), readBufSize), nil, nil)
	return rep, err
}

func TestReadReply(t *testing.T) {
	long := strings.Repeat("x", maxReplyLine)
	tests := []struct {
		name string
		in   string
		want Reply
		err  error // nil: success
	}{
		{"single", "250 ok\r\n", Reply{Code: 250, Message: "ok"}, nil},
		{"bare code", "250\r\n", Reply{Code: 250}, nil},
		{"empty text", "250 \r\n", Reply{Code: 250}, nil},
		{"LF only", "250 ok\n", Reply{Code: 250, Message: "ok"}, nil},
		{"multi", "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
			Reply{Code: 250, Message: "mx.test\nPIPELINING\nSIZE 10"}, nil},
		{"enhanced", "550 5.1.1 no such user\r\n", Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "no such user"}, nil},
		{"enhanced multi", "452-4.5.3 too many\r\n452 4.5.3 recipients\r\n",
			Reply{Code: 452, Enhanced: [3]int{4, 5, 3}, Message: "too many\nrecipients"}, nil},
		{"enhanced only", "250 2.0.0\r\n", Reply{Code: 250, Enhanced: [3]int{2, 0, 0}}, nil},
		{"enhanced 3 digits", "550 5.100.999 x\r\n", Reply{Code: 550, Enhanced: [3]int{5, 100, 999}, Message: "x"}, nil},
		{"enhanced class mismatch kept", "250 5.1.1 odd\r\n", Reply{Code: 250, Message: "5.1.1 odd"}, nil},
		{"enhanced 4 digits kept", "550 5.1000.1 x\r\n", Reply{Code: 550, Message: "5.1000.1 x"}, nil},
		{"enhanced no space kept", "550 5.1.1x\r\n", Reply{Code: 550, Message: "5.1.1x"}, nil},
		{"version-like text", "250 2.0 fine\r\n", Reply{Code: 250, Message: "2.0 fine"}, nil},
		{"354 no enhanced", "354 3.0.0 go\r\n", Reply{Code: 354, Message: "3.0.0 go"}, nil},
		{"line at limit", "250 " + long[4:] + "\r\n", Reply{Code: 250, Message: long[4:]}, nil},
		{"trailing data not read", "250 ok\r\n250 next\r\n", Reply{Code: 250, Message: "ok"}, nil},

		{"line over limit", "250 " + long + "\r\n", Reply{}, ErrProtocol},
		{"line over buffer", "250 " + strings.Repeat("y", 10000) + "\r\n", Reply{}, ErrProtocol},
		{"non numeric", "2x0 ok\r\n", Reply{}, ErrProtocol},
		{"letters", "hello\r\n", Reply{}, ErrProtocol},
		{"1xx", "150 ok\r\n", Reply{}, ErrProtocol},
		{"6xx", "650 ok\r\n", Reply{}, ErrProtocol},
		{"short", "25\r\n", Reply{}, ErrProtocol},
		{"bad separator", "250+ok\r\n", Reply{}, ErrProtocol},
		{"mismatched codes", "250-a\r\n251 b\r\n", Reply{}, ErrProtocol},
		{"too many lines", strings.Repeat("250-x\r\n", maxReplyLines) + "250 y\r\n", Reply{}, ErrProtocol},
		{"eof", "", Reply{}, io.EOF},
		{"eof mid line", "250 o", Reply{}, io.ErrUnexpectedEOF},
		{"eof mid reply", "250-a\r\n", Reply{}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReplyHelpers(t *testing.T) {
	r := Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "a\nb"}
	if got := r.String(); got != "550 5.1.1 a / b" {
		t.Errorf("String = %q", got)
	}
	if got := r.Lines(); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("Lines = %q", got)
	}
	if (Reply{}).Lines() != nil || r.Positive() || !(Reply{Code: 250}).Positive() {
		t.Error("Lines/Positive of edge cases")
	}
}

func TestParseEHLO(t *testing.T) {
	rep, err := parse("250-mx.test greets you\r\n250-pipelining\r\n250-Size 1000\r\n" +
		"250-AUTH=LOGIN\r\n250-auth PLAIN LOGIN\r\n250-LIMITS RCPTMAX=10 MAILMAX=5\r\n250 8BITMIME\r\n")
	if err != nil {
		t.Fatal(err)
	}
	ext := parseEHLO(rep)
	want := map[string]string{"PIPELINING": "", "SIZE": "1000", "AUTH": "PLAIN LOGIN",
		"LIMITS": "RCPTMAX=10 MAILMAX=5", "8BITMIME": ""}
	if len(ext) != len(want) {
		t.Errorf("ext = %q, want %q", ext, want)
	}
	for k, v := range want {
		if ext[k] != v {
			t.Errorf("ext[%s] = %q, want %q", k, ext[k], v)
		}
	}
	if n := rcptMax(ext["LIMITS"]); n != 10 {
		t.Errorf("rcptMax = %d", n)
	}
	old := parseEHLO(Reply{Code: 250, Message: "mx\nAUTH=LOGIN PLAIN"})
	if old["AUTH"] != "LOGIN PLAIN" {
		t.Errorf("old-style AUTH= = %q", old["AUTH"])
	}
}

// FuzzReadReply: never panics, never returns a reply it could not have
// parsed, and stops at the first complete reply.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 ok\r\n", "250-a\r\n250 b\r\n", "550 5.1.1 x\r\n", "250\n", "2",
		"452-4.5.3 a\r\n452 4.5.3 b\r\n", "250-a\r\n251 b\r\n", "999 x\r\n",
		"250 2.0.0\r\n", "250 " + strings.Repeat("z", 3000) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		src := bytes.NewReader(data)
		br := bufio.NewReaderSize(src, readBufSize)
		rep, _, err := readReply(br, nil, nil)
		if err != nil {
			return
		}
		if rep.Code < 200 || rep.Code > 599 {
			t.Fatalf("code %d accepted", rep.Code)
		}
		if len(rep.Message) > maxReplyLines*(maxReplyLine+1) {
			t.Fatalf("message of %d octets", len(rep.Message))
		}
		if e := rep.Enhanced; e != [3]int{} && e[0] != rep.Code/100 {
			t.Fatalf("enhanced %v with code %d", e, rep.Code)
		}
		consumed := len(data) - src.Len() - br.Buffered()
		if consumed <= 0 || data[consumed-1] != '\n' {
			t.Fatalf("stopped at %d, not after a line", consumed)
		}
		// The remembered texts change nothing but where the string lives:
		// the same input read twice through one cache, the second time
		// from the cache, gives the very reply read without one.
		var texts replyTexts
		for range 2 {
			got, _, err := readReply(bufio.NewReaderSize(bytes.NewReader(data), readBufSize), nil, &texts)
			if err != nil || got != rep {
				t.Fatalf("with remembered texts: %+v, %v; without: %+v", got, err, rep)
			}
		}
		if want := oldReplyString(rep); rep.String() != want {
			t.Fatalf("String() = %q, want %q", rep.String(), want)
		}
	})
}

// oldReplyString is Reply.String as it was written before it was built in
// one buffer: the reference the fuzz test holds the faster one to.
func oldReplyString(r Reply) string {
	s := strconv.Itoa(r.Code)
	if r.Enhanced != [3]int{} {
		s += " " + formatEnhanced(r.Enhanced)
	}
	if r.Message != "" {
		s += " " + strings.ReplaceAll(r.Message, "\n", " / ")
	}
	return s
}

// Texts the session has seen are shared, not copied again; others are
// remembered in their place, four at a time.
func TestReplyTextsShareEqualText(t *testing.T) {
	var texts replyTexts
	a := texts.text([]byte("2.0.0 Ok"))
	if n := testing.AllocsPerRun(100, func() {
		if texts.text([]byte("2.0.0 Ok")) != a {
			t.Fatal("different text")
		}
	}); n != 0 {
		t.Errorf("a text seen before: %v allocations, want 0", n)
	}
	for i := range 4 {
		texts.text([]byte{byte('a' + i)})
	}
	if b := texts.text([]byte("2.0.0 Ok")); b != a || unsafe.StringData(b) == unsafe.StringData(a) {
		t.Errorf("a text pushed out by four others came back shared (%q)", b)
	}
}
