package dkimsign

import (
	"strings"
	"testing"
)

// ParseRecord reads what anyone may publish in DNS: it must never panic,
// and a record it accepts has a key unless it is revoked.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
		"v=DKIM1; k=rsa; t=y:s; h=sha256; p=",
		"k=rsa; p=MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAK",
		"v=DKIM1;;; p = AAAA ; n=notes",
		"v=spf1 -all",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := ParseRecord(s)
		if err != nil {
			return
		}
		if !rec.Revoked && rec.Public == nil {
			t.Fatalf("accepted %q without a key", s)
		}
		if rec.Public != nil {
			if _, err := Record(rec.Public); err != nil && rec.Bits >= MinRSABits {
				t.Fatalf("a parsed key cannot be published again: %v", err)
			}
		}
	})
}

// ScanHeader reads messages as given: it must never panic, and it counts
// no field that is not in the header section.
func FuzzScanHeader(f *testing.F) {
	for _, s := range []string{
		"From: a@b.example\r\nTo: c\r\n\r\nDate: body\r\n",
		"x\r\n",
		"\r\n",
		"A: b\r\n c\r\n\tD: e\r\n",
		"From: \"q\\\"uote\" <a@[1.2.3.4]>\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ScanHeader(strings.NewReader(s))
		if err != nil {
			t.Fatal(err)
		}
		header, _, _ := strings.Cut(s, "\r\n\r\n")
		for name := range h.Count {
			if !strings.Contains(strings.ToLower(header), name) {
				t.Fatalf("counted %q, which is not in the header section of %q", name, s)
			}
		}
	})
}
