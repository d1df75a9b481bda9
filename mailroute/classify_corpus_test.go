package mailroute

import (
	"bufio"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

// corpusEntry is one real reply in testdata/replies.jsonl: where it was
// published, what it is, and what the classifier must make of it.
type corpusEntry struct {
	Source   string `json:"source"`
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced"`
	Command  string `json:"command"`
	Text     string `json:"text"`
	Class    string `json:"class"`
	Fallback bool   `json:"fallback"`
	// KnownMiss, when set, says why the classifier gets this entry wrong
	// on purpose (the reply is ambiguous, and the other reading costs
	// more). It is counted against the accuracy.
	KnownMiss string `json:"known_miss,omitempty"`
}

func (c corpusEntry) err(t testing.TB) *Error {
	var enh EnhancedCode
	if c.Enhanced != "" {
		parts := strings.Split(c.Enhanced, ".")
		if len(parts) != 3 {
			t.Fatalf("bad enhanced code %q", c.Enhanced)
		}
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil {
				t.Fatalf("bad enhanced code %q", c.Enhanced)
			}
			enh[i] = n
		}
	}
	return &Error{Code: c.Code, Enhanced: enh, Command: c.Command, Message: c.Text, Host: "mx.example.net", Permanent: c.Code >= 500}
}

func loadCorpus(t testing.TB) []corpusEntry {
	t.Helper()
	f, err := os.Open("testdata/replies.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []corpusEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		var c corpusEntry
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("replies.jsonl:%d: %v", line, err)
		}
		if c.Source == "" || c.Code < 200 || c.Code > 599 || c.Class == "" {
			t.Fatalf("replies.jsonl:%d: incomplete entry %+v", line, c)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestClassifyCorpus classifies every reply of the corpus and checks the
// class, the default fallback decision and that the explanation names
// something present in the reply. Entries marked known_miss must still be
// missed: a classifier change that fixes one should remove the mark.
func TestClassifyCorpus(t *testing.T) {
	corpus := loadCorpus(t)
	if len(corpus) < 150 {
		t.Fatalf("the corpus has %d replies, want at least 150", len(corpus))
	}
	right := 0
	sources := map[string]bool{}
	for i, c := range corpus {
		sources[c.Source] = true
		e := c.err(t)
		v := Explain(e)
		got := v.Class.String() == c.Class
		if got {
			right++
		}
		switch {
		case c.KnownMiss == "" && !got:
			t.Errorf("line %d: %d %s %q: got %v, want %s", i+1, c.Code, c.Enhanced, c.Text, v, c.Class)
		case c.KnownMiss != "" && got:
			t.Errorf("line %d: marked known_miss (%s) but now classified right; remove the mark", i+1, c.KnownMiss)
		}
		if fb := (FallbackPolicy{}).ShouldFallback(e); fb != c.Fallback && c.KnownMiss == "" {
			t.Errorf("line %d: %q: fallback %v, want %v", i+1, c.Text, fb, c.Fallback)
		}
		if why := explanationEvidence(v); why == "" || !evidencePresent(e, why) {
			t.Errorf("line %d: explanation %v names nothing in the reply %q", i+1, v, c.Text)
		}
	}
	t.Logf("classifier accuracy on the corpus: %d/%d = %.1f%% (%d sources)", right, len(corpus), 100*float64(right)/float64(len(corpus)), len(sources))
}

// explanationEvidence is what a verdict on a reply cites.
func explanationEvidence(v Verdict) string {
	if v.Marker != "" {
		return v.Marker
	}
	return v.Code
}

// evidencePresent reports whether the cited evidence is in the reply: a
// marker in its text, a code among its codes.
func evidencePresent(e *Error, why string) bool {
	return strings.Contains(e.Message, why) || why == e.Enhanced.String() || why == strconv.Itoa(e.Code)
}

// BenchmarkExplainCorpus: one op classifies every reply of the corpus once.
func BenchmarkExplainCorpus(b *testing.B) {
	corpus := loadCorpus(b)
	errs := make([]*Error, len(corpus))
	for i, c := range corpus {
		errs[i] = c.err(b)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, e := range errs {
			Explain(e)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(errs)), "ns/reply")
}
