package mailroute

import (
	"strings"
	"testing"
)

// FuzzParseTLSRPT: an accepted record yields only mailto: and https:
// addresses, and only from a v=TLSRPTv1 record.
func FuzzParseTLSRPT(f *testing.F) {
	f.Add("v=TLSRPTv1; rua=mailto:a@b.example,https://r.example/x")
	f.Add("v=TLSRPTv1;rua=;")
	f.Fuzz(func(t *testing.T, rec string) {
		rua, err := parseTLSRPT(rec)
		if err != nil {
			return
		}
		if !strings.HasPrefix(strings.TrimSpace(rec), "v=TLSRPTv1") || len(rua) == 0 {
			t.Fatalf("%q accepted: %v", rec, rua)
		}
		for _, u := range rua {
			if !strings.HasPrefix(u, "mailto:") && !strings.HasPrefix(u, "https://") {
				t.Fatalf("%q gave %q", rec, u)
			}
		}
	})
}

// FuzzTLSRequiredNo: the header scan says yes only when the header
// section (before the first empty line) has a TLS-Required field saying
// No, and never reads the body as header.
func FuzzTLSRequiredNo(f *testing.F) {
	f.Add("Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n")
	f.Add("Subject: x\r\n\r\nTLS-Required: No\r\n")
	f.Add("tls-required:   no  \r\n\r\n")
	f.Fuzz(func(t *testing.T, msg string) {
		got := headerSaysTLSRequiredNo(strings.NewReader(msg))
		header, _, _ := strings.Cut(strings.ReplaceAll(msg, "\r\n", "\n"), "\n\n")
		want := false
		for _, line := range strings.Split(header, "\n") {
			line = strings.TrimRight(line, "\r")
			if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "TLS-Required") {
				want = strings.EqualFold(strings.TrimSpace(value), "No")
				break
			}
		}
		if got && !want {
			t.Fatalf("%q: said TLS-Required: No", msg)
		}
		// The in-memory scan, which the Send path uses, says exactly
		// what the header says.
		if inMem := headerBytesSayTLSRequiredNo([]byte(msg)); inMem != want {
			t.Fatalf("%q: in memory %v, want %v", msg, inMem, want)
		}
	})
}
