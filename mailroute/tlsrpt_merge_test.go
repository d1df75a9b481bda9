package mailroute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newTestReporter is a reporter on store, as New makes one, whose own
// timer never fires during the test.
func newTestReporter(t *testing.T, store StateStore, now func() time.Time) *tlsReporter {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	r := &tlsReporter{now: now}
	r.start(store, discardLogger, time.Hour, done)
	return r
}

var rptDay = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func rptTestTarget(domain string) *rptTarget {
	return &rptTarget{domain: domain, policy: rptPolicy{Type: "sts", Domain: domain, Strings: []string{"version: STSv1", "mode: enforce"}, MXHost: []string{"mx." + domain}}, mx: "mx." + domain}
}

// totals adds up a domain's counts: successes, failures, the failure
// details' sum, and how many details there are per policy at most.
func totals(agg rptDayAgg) (ok, failed, details int64, most int) {
	for _, b := range agg {
		ok += b.success
		for _, n := range b.failures {
			failed += n
			details += n
		}
		most = max(most, len(b.failures))
	}
	return
}

// Failure details past the cap are folded per result type, in the saved
// entry and in the merged report, and no count is lost.
func TestTLSRPTCapsFailureDetails(t *testing.T) {
	store := &memoryState{}
	now := func() time.Time { return rptDay }
	var rs []*tlsReporter
	for i := range 2 {
		r := newTestReporter(t, store, now)
		tg := rptTestTarget("dest.test")
		for j := range 70 {
			for range j%3 + 1 {
				r.failure(tg, "validation-failure", fmt.Errorf("instance %d, reason %d", i, j))
			}
		}
		r.failure(tg, "certificate-expired", errors.New("expired"))
		r.success(tg)
		if err := r.flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	// 70 reasons of 1–3 sessions each (139 sessions) plus one expiry, per
	// instance.
	all, _ := store.ListState(context.Background(), rptNamespace, rptDay)
	for k, v := range all {
		_, agg, err := decodeRpt(v)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if ok, failed, details, most := totals(agg); ok != 1 || failed != 140 || details != 140 || most > rptMaxFailures+len(rptResultTypes) {
			t.Errorf("%s: ok %d failed %d details %d, %d details", k, ok, failed, details, most)
		}
	}
	done := make(chan struct{})
	defer close(done)
	m := &Mailer{hostname: "mail.sender.test"}
	m.tlsrpt.now = now
	m.tlsrpt.start(store, discardLogger, time.Hour, done)
	rep := m.TLSReport("dest.test", TLSReportOptions{Day: rptDay})
	if rep == nil || len(rep.Policies) != 1 {
		t.Fatalf("report %+v", rep)
	}
	p := rep.Policies[0]
	var sum int64
	folded := map[string]int64{}
	for _, f := range p.FailureDetails {
		sum += f.FailedSessionCount
		if f.AdditionalInformation == rptOverflowReason {
			folded[f.ResultType] += f.FailedSessionCount
		}
	}
	if p.Summary.Successful != 2 || p.Summary.Failed != 280 || sum != 280 || len(p.FailureDetails) != rptMaxFailures+1 || folded["validation-failure"] == 0 {
		t.Errorf("summary %+v, details %d summing to %d, folded %v", p.Summary, len(p.FailureDetails), sum, folded)
	}
	// The expiry, rare as it is, is folded into its own type's detail or
	// kept: never mixed into another type.
	var expired int64
	for _, f := range p.FailureDetails {
		if f.ResultType == "certificate-expired" {
			expired += f.FailedSessionCount
		}
	}
	if expired != 2 {
		t.Errorf("certificate-expired counts %d, want 2", expired)
	}
}

// Sessions counted while flushes and reports run beside them are each in
// every later report exactly once: a report never counts a session
// twice, nor loses one, whatever the interleaving.
func TestTLSRPTConcurrentFlushNoDoubleCount(t *testing.T) {
	store := &memoryState{}
	now := func() time.Time { return rptDay }
	r := newTestReporter(t, store, now)
	other := newTestReporter(t, store, now) // reads what r saved
	const n = 3000
	var counted atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tg := rptTestTarget("dest.test")
			for i := range n / 3 {
				if (i+g)%2 == 0 {
					r.success(tg)
				} else {
					r.failure(tg, "validation-failure", errors.New("bad"))
				}
				counted.Add(1)
			}
		}()
	}
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				r.flush(context.Background())
			}
		}
	}()
	day := rptDay.Unix() / 86400
	var last int64
	for counted.Load() < n {
		before := counted.Load()
		agg, err := r.dayCounts(context.Background(), day, "dest.test")
		after := counted.Load()
		if err != nil {
			t.Fatal(err)
		}
		ok, failed, _, _ := totals(agg["dest.test"])
		// counted lags the reporter by at most one session per
		// goroutine: it is added to after the session is counted.
		if got := ok + failed; got < before || got > after+3 || got < last {
			t.Fatalf("a report counts %d sessions; %d–%d were counted, the last report had %d", got, before, after+3, last)
		} else {
			last = got
		}
	}
	wg.Wait()
	close(stop)
	fwg.Wait()
	for name, rep := range map[string]*tlsReporter{"counting instance": r, "other instance, after the last flush": other} {
		if name != "counting instance" {
			r.flush(context.Background())
		}
		agg, _ := rep.dayCounts(context.Background(), day, "dest.test")
		if ok, failed, _, _ := totals(agg["dest.test"]); ok+failed != n {
			t.Errorf("%s: %d sessions, want %d", name, ok+failed, n)
		}
	}
}

// Entries read back from the store are checked: a tampered one is left
// out of the report, whole, and the sound ones still count.
func TestTLSRPTRefusesTamperedEntries(t *testing.T) {
	store := &memoryState{}
	now := func() time.Time { return rptDay }
	w := newTestReporter(t, store, now)
	w.success(rptTestTarget("dest.test"))
	w.failure(rptTestTarget("dest.test"), "starttls-not-supported", nil)
	if err := w.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	good := `{"v":1,"day":"2026-11-28","domain":"dest.test","policies":[{"type":"sts","domain":"dest.test","ok":5}]}`
	exp := rptDay.Add(96 * time.Hour)
	for key, value := range map[string]string{
		"2026-11-28/aaaa/dest.test": `{"v":1,"day":"2026-11-28","domain":"dest.test","policies":[{"type":"sts","domain":"dest.test","ok":7,"failed":[{"type":"made-up","n":1}]}]}`,
		"2026-11-28/bbbb/dest.test": `{"v":1,"day":"2026-11-28","domain":"dest.test","policies":[{"type":"sts","domain":"dest.test","ok":-7}]}`,
		"2026-11-28/cccc/dest.test": `{"v":1,"day":"2026-11-27","domain":"dest.test","policies":[{"type":"sts","domain":"dest.test","ok":7}]}`,
		"2026-11-28/dddd/dest.test": `{"v":1,"day":"2026-11-28","domain":"evil.test","policies":[{"type":"sts","domain":"evil.test","ok":7}]}`,
		"2026-11-28/eeee/dest.test": `{"v":1,"day":"2026-11-28","domain":"dest.test","policies":[{"type":"sts","domain":"dest.test","ok":7,"extra":1}]}`,
		"2026-11-28/ffff/dest.test": `{"v":1,"day":"2026-11-28","domain":"dest.test","policies":[{"type":"sts","domain":"other.test","ok":7}]}`,
		"2026-11-28/gggg/dest.test": `{"v":2,"day":"2026-11-28","domain":"dest.test","policies":[{"type":"sts","domain":"dest.test","ok":7}]}`,
		"2026-11-28/hhhh/dest.test": good,
	} {
		store.PutState(context.Background(), rptNamespace, key, []byte(value), exp)
	}
	r := newTestReporter(t, store, now)
	agg, err := r.dayCounts(context.Background(), rptDay.Unix()/86400, "dest.test")
	if err != nil {
		t.Fatal(err)
	}
	if ok, failed, _, _ := totals(agg["dest.test"]); ok != 6 || failed != 1 {
		t.Errorf("ok %d failed %d, want 6 and 1: only the writer's entry and the sound one count", ok, failed)
	}
}

// FuzzDecodeRpt: whatever decodeRpt accepts is what encodeRpt could have
// written: it encodes within a StateStore value's size, decodes back to
// the same counts, and its counts are sane.
func FuzzDecodeRpt(f *testing.F) {
	// More seeds, tampered entries among them, are in
	// testdata/fuzz/FuzzDecodeRpt.
	f.Add([]byte(`{"v":1,"day":"2026-11-28","domain":"dest.test","policies":[{"type":"sts","domain":"dest.test","strings":["version: STSv1"],"mx":["mx.dest.test"],"ok":5,"failed":[{"type":"certificate-expired","mx":"mx.dest.test","reason":"expired","n":2}]}]}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		dk, agg, err := decodeRpt(value)
		if err != nil {
			return
		}
		ok, failed, _, most := totals(agg)
		if ok < 0 || failed < 0 || most > rptMaxFailures+len(rptResultTypes) || len(agg) > rptMaxPolicies {
			t.Fatalf("accepted %s: ok %d failed %d, %d details", value, ok, failed, most)
		}
		for _, b := range agg {
			for fk, n := range b.failures {
				if n < 1 || len(fk.reason) > 200 {
					t.Fatalf("accepted a detail %+v ×%d", fk, n)
				}
			}
		}
		before := agg.clone()
		enc, err := encodeRpt(dk, agg)
		if err != nil {
			t.Fatalf("accepted %s, cannot encode it: %v", value, err)
		}
		if len(enc) > rptMaxValue {
			t.Fatalf("%d bytes", len(enc))
		}
		dk2, agg2, err := decodeRpt(enc)
		if err != nil || dk2 != dk {
			t.Fatalf("re-encoded %s: %v, %+v", enc, err, dk2)
		}
		ok2, failed2, _, _ := totals(agg2)
		if ok2 != ok || failed2 != failed {
			t.Fatalf("counts changed: %d/%d → %d/%d", ok, failed, ok2, failed2)
		}
		if most <= rptMaxFailures && !reflect.DeepEqual(flat(before), flat(agg2)) {
			t.Fatalf("round trip changed the counts:\n%v\n%v", flat(before), flat(agg2))
		}
	})
}

// flat is an aggregate's counts by policy and detail.
func flat(a rptDayAgg) map[string]int64 {
	out := map[string]int64{}
	for pk, b := range a {
		out[pk+"|ok"] += b.success
		for fk, n := range b.failures {
			out[pk+"|"+fk.resultType+"|"+fk.mx+"|"+fk.reason] += n
		}
	}
	return out
}

// An entry that would exceed a StateStore value folds its details per
// result type, keeping every count; one too big even then is an error.
func TestEncodeRptSize(t *testing.T) {
	dk := rptDayKey{day: rptDay.Unix() / 86400, domain: "dest.test"}
	long := strings.Repeat("x", 200)
	mk := func(policyStrings int) rptDayAgg {
		b := &rptBucket{policy: rptPolicy{Type: "sts", Domain: "dest.test"}, success: 3, failures: map[rptFailureKey]int64{}}
		for i := range policyStrings {
			b.policy.MXHost = append(b.policy.MXHost, fmt.Sprintf("mx%d.%s.dest.test", i, strings.Repeat("m", 180)))
		}
		for i := range rptMaxFailures {
			b.failures[rptFailureKey{resultType: "validation-failure", mx: fmt.Sprintf("mx%d.%s", i, strings.Repeat("h", 200)), reason: long}] = int64(i + 1)
		}
		return rptDayAgg{b.policy.key(): b}
	}
	enc, err := encodeRpt(dk, mk(240)) // ~48 KiB of policy, ~23 KiB of details
	if err != nil {
		t.Fatal(err)
	}
	_, agg, err := decodeRpt(enc)
	if err != nil {
		t.Fatalf("%d bytes: %v", len(enc), err)
	}
	ok, failed, _, most := totals(agg)
	if len(enc) > rptMaxValue || ok != 3 || failed != rptMaxFailures*(rptMaxFailures+1)/2 || most != 1 {
		t.Errorf("%d bytes, ok %d, failed %d, %d details", len(enc), ok, failed, most)
	}
	if _, err := encodeRpt(dk, mk(400)); err == nil {
		t.Error("an entry of over 64 KiB of policy alone was encoded")
	}
}

// Counts a failing store has not taken within rptKeep are dropped, and
// the log says how many sessions were given up.
func TestTLSRPTDroppedCountsLogged(t *testing.T) {
	store := &countingStore{MemoryQueue: newMemQueue(), failPut: true}
	clock := newFakeClock()
	var buf bytes.Buffer
	var mu sync.Mutex
	done := make(chan struct{})
	defer close(done)
	r := &tlsReporter{now: clock.Now}
	r.start(store, slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil)), time.Hour, done)
	for range 3 {
		r.success(rptTestTarget("dest.test"))
	}
	if err := r.flush(context.Background()); err == nil {
		t.Fatal("flush on a failing store succeeded")
	}
	clock.Advance(rptKeep + 2*time.Hour)
	r.success(rptTestTarget("dest.test")) // a new hour: the old ones are pruned
	mu.Lock()
	defer mu.Unlock()
	if s := buf.String(); !strings.Contains(s, "TLS-RPT counts not saved") || !strings.Contains(s, "TLS-RPT counts dropped") || !strings.Contains(s, "sessions=3") {
		t.Errorf("log:\n%s", s)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
