package doctor

import (
	"strings"
	"testing"
)

// The SPF helpers read records anyone publishes: they must never panic,
// and a term added before the all is in the result.
func FuzzSPFTerms(f *testing.F) {
	for _, s := range []string{
		"v=spf1 ip4:192.0.2.1 include:_spf.example.net ~all",
		"v=spf1 redirect=_spf.example.net",
		"v=spf1",
		"v=spf1 +all -all ?include:%{d}.x",
		"v=spf1 \t INCLUDE:Upper.Example. -ALL",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !isSPF(s) {
			return
		}
		for _, d := range spfTargets(s) {
			if strings.Contains(d, "%") {
				t.Fatalf("target %q from %q", d, s)
			}
		}
		allQualifier(s)
		out := insertBeforeAll(s, "ip4:192.0.2.1")
		if !strings.Contains(out, "ip4:192.0.2.1") || !isSPF(out) {
			t.Fatalf("insertBeforeAll(%q) = %q", s, out)
		}
	})
}
