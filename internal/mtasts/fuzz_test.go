package mtasts

import (
	"strings"
	"testing"
)

// FuzzParsePolicy: whatever parses renders back to a policy that parses
// to the same thing, and matching never lets a wildcard cover two labels.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n"))
	f.Add([]byte("version: STSv1\nmode: none\nmax_age: 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		if p.MaxAge < 0 || p.MaxAge > MaxAgeLimit {
			t.Fatalf("max_age %d out of range", p.MaxAge)
		}
		q, err := ParsePolicy([]byte(p.String()))
		if err != nil {
			t.Fatalf("rendered policy does not parse: %v\n%s", err, p.String())
		}
		if q.String() != p.String() {
			t.Fatalf("round trip changed the policy:\n%s\n%s", p, q)
		}
		for _, pat := range p.MX {
			if rest, ok := strings.CutPrefix(pat, "*."); ok {
				if p.Match("a.b."+rest) && !p.Match("b."+rest) {
					t.Fatalf("%q matched two labels", pat)
				}
				if !p.Match("x." + rest) {
					t.Fatalf("%q did not match one label", pat)
				}
			} else if !p.Match(strings.ToUpper(pat) + ".") {
				t.Fatalf("%q does not match itself", pat)
			}
		}
	})
}

// FuzzParseRecord: an accepted record has a valid id, and the record
// rebuilt from it parses to the same id.
func FuzzParseRecord(f *testing.F) {
	f.Add("v=STSv1; id=20240101;")
	f.Add("v=STSv1;id=a;x=y")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseRecord(s)
		if err != nil {
			return
		}
		if !validID(id) {
			t.Fatalf("accepted id %q", id)
		}
		if id2, err := ParseRecord("v=STSv1; id=" + id + ";"); err != nil || id2 != id {
			t.Fatalf("rebuilt record: %q, %v", id2, err)
		}
	})
}
