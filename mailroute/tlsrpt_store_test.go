package mailroute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// countingStore is a shared store (a MemoryQueue, as a directory or a
// database shared by instances) that records every StateStore call on the
// TLS-RPT namespace and can refuse its writes.
type countingStore struct {
	*MemoryQueue

	mu      sync.Mutex
	calls   []string // "put <key>", "list", …
	failPut bool
}

func (c *countingStore) note(ns, call string) {
	if ns != rptNamespace {
		return
	}
	c.mu.Lock()
	c.calls = append(c.calls, call)
	c.mu.Unlock()
}

// take returns the calls since the last take.
func (c *countingStore) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.calls
	c.calls = nil
	return out
}

func (c *countingStore) setFailPut(v bool) {
	c.mu.Lock()
	c.failPut = v
	c.mu.Unlock()
}

func (c *countingStore) GetState(ctx context.Context, ns, key string, now time.Time) ([]byte, bool, error) {
	c.note(ns, "get "+key)
	return c.MemoryQueue.GetState(ctx, ns, key, now)
}

func (c *countingStore) PutState(ctx context.Context, ns, key string, value []byte, expires time.Time) error {
	c.note(ns, "put "+key)
	c.mu.Lock()
	fail := c.failPut && ns == rptNamespace
	c.mu.Unlock()
	if fail {
		return errors.New("disk full")
	}
	return c.MemoryQueue.PutState(ctx, ns, key, value, expires)
}

func (c *countingStore) DeleteState(ctx context.Context, ns, key string) error {
	c.note(ns, "delete "+key)
	return c.MemoryQueue.DeleteState(ctx, ns, key)
}

func (c *countingStore) ListState(ctx context.Context, ns string, now time.Time) (map[string][]byte, error) {
	c.note(ns, "list")
	return c.MemoryQueue.ListState(ctx, ns, now)
}

// rptWorld has two MTA-STS domains: dest.test, whose MX passes (one
// success per session), and other.test, whose MX has a certificate for
// another name (one certificate-host-mismatch per attempt).
func rptWorld(t *testing.T) (*tlsWorld, *fakeClock) {
	w := newTLSWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{TLS: w.ca.ServerConfig("mx.dest.test")})
	w.mx("mx.other.test", "127.0.0.2", smtptest.Options{TLS: w.ca.ServerConfig("mx.wrong.test")})
	w.dns.MX("dest.test", "mx.dest.test")
	w.dns.MX("other.test", "mx.other.test")
	w.sts("dest.test", "1", "enforce", "mx.dest.test")
	w.sts("other.test", "1", "enforce", "mx.other.test")
	return w, newFakeClock()
}

// rptMailer is an instance on store. The clock does not move, so the
// queue never retries the deferred other.test: every count comes from a
// Send of the test.
func (w *tlsWorld) rptMailer(store QueueStore, clock *fakeClock, flush time.Duration) *Mailer {
	return w.mailer(Config{now: clock.Now, MaxConnsPerHost: 1, Queue: store, tlsrptFlush: flush}, false)
}

// sendBoth sends n messages, each to dest.test and other.test.
func sendBoth(t *testing.T, m *Mailer, n int) {
	t.Helper()
	for range n {
		res, _ := send(t, m, "a@sender.test", []string{"b@dest.test", "c@other.test"}, testBody)
		wantStatus(t, res, "b@dest.test", Delivered)
	}
}

// reportJSON is m's report of domain today, as JSON, "" when none.
func reportJSON(t *testing.T, m *Mailer, domain string, clock *fakeClock) string {
	t.Helper()
	r := m.TLSReport(domain, TLSReportOptions{Organization: "Sender Inc.", Contact: "tls@sender.test", Day: clock.Now()})
	if r == nil {
		return ""
	}
	raw, err := json.Marshal(r.Policies)
	if err != nil {
		t.Fatal(err)
	}
	full, _ := json.Marshal(r)
	if err := validateTLSRPT(full); err != nil {
		t.Fatalf("%s: %v\n%s", domain, err, full)
	}
	return string(raw)
}

// summary is the report's counts and failure details of domain today.
func summary(t *testing.T, m *Mailer, domain string, clock *fakeClock) string {
	t.Helper()
	r := m.TLSReport(domain, TLSReportOptions{Day: clock.Now()})
	if r == nil {
		return "none"
	}
	var b strings.Builder
	for _, p := range r.Policies {
		fmt.Fprintf(&b, "%s ok=%d failed=%d", p.Policy.Type, p.Summary.Successful, p.Summary.Failed)
		for _, f := range p.FailureDetails {
			fmt.Fprintf(&b, " %s@%s×%d", f.ResultType, f.ReceivingMXHostname, f.FailedSessionCount)
		}
	}
	return b.String()
}

// A Mailer closed and started again on the same store reports the day's
// counts as the first had them: Close saved them.
func TestTLSReportSurvivesRestart(t *testing.T) {
	w, clock := rptWorld(t)
	store := &countingStore{MemoryQueue: newMemQueue()}
	a := w.rptMailer(store, clock, 0)
	sendBoth(t, a, 2)
	want := map[string]string{}
	for _, d := range []string{"dest.test", "other.test"} {
		want[d] = reportJSON(t, a, d, clock)
	}
	if got := summary(t, a, "other.test", clock); got != "sts ok=0 failed=2 certificate-host-mismatch@mx.other.test×2" {
		t.Fatalf("other.test before the restart: %s", got)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	b := w.rptMailer(store, clock, 0)
	if got := strings.Join(b.TLSReportDomains(clock.Now()), ","); got != "dest.test,other.test" {
		t.Errorf("domains after the restart: %q", got)
	}
	for d, raw := range want {
		if got := reportJSON(t, b, d, clock); got != raw {
			t.Errorf("%s after the restart:\n got %s\nwant %s", d, got, raw)
		}
	}
	// The restarted instance adds to what was saved.
	sendBoth(t, b, 1)
	if got := summary(t, b, "dest.test", clock); got != "sts ok=2 failed=0" {
		t.Errorf("dest.test after a send of the restarted instance: %s", got)
	}
	if got := summary(t, b, "other.test", clock); got != "sts ok=0 failed=3 certificate-host-mismatch@mx.other.test×3" {
		t.Errorf("other.test after a send of the restarted instance: %s", got)
	}
}

// Two instances on one store: once both have saved, either's report is
// the sum; before, each sees its own counts and what the other saved.
func TestTLSReportAddsUpInstances(t *testing.T) {
	w, clock := rptWorld(t)
	store := &countingStore{MemoryQueue: newMemQueue()}
	a := w.rptMailer(store, clock, time.Hour)
	b := w.rptMailer(store, clock, time.Hour)
	sendBoth(t, a, 2)
	sendBoth(t, b, 3)

	if got := summary(t, a, "other.test", clock); got != "sts ok=0 failed=2 certificate-host-mismatch@mx.other.test×2" {
		t.Errorf("a before anything is saved: %s", got)
	}
	if err := b.tlsrpt.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := summary(t, a, "other.test", clock); got != "sts ok=0 failed=5 certificate-host-mismatch@mx.other.test×5" {
		t.Errorf("a once b saved: %s", got)
	}
	if got := summary(t, b, "other.test", clock); got != "sts ok=0 failed=3 certificate-host-mismatch@mx.other.test×3" {
		t.Errorf("b, a not saved: %s", got)
	}
	if err := a.tlsrpt.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Mailer{a, b} {
		if got := summary(t, m, "dest.test", clock); got != "sts ok=2 failed=0" { // one pooled session each
			t.Errorf("dest.test: %s", got)
		}
		if got := summary(t, m, "other.test", clock); got != "sts ok=0 failed=5 certificate-host-mismatch@mx.other.test×5" {
			t.Errorf("other.test: %s", got)
		}
	}
	if ra, rb := reportJSON(t, a, "other.test", clock), reportJSON(t, b, "other.test", clock); ra != rb {
		t.Errorf("the instances disagree:\n%s\n%s", ra, rb)
	}
	// Saving again changes nothing: a saved delta left memory.
	a.tlsrpt.flush(context.Background())
	b.tlsrpt.flush(context.Background())
	if got := summary(t, b, "other.test", clock); got != "sts ok=0 failed=5 certificate-host-mismatch@mx.other.test×5" {
		t.Errorf("other.test after a second save: %s", got)
	}
	// Each instance wrote its own keys only.
	all, _ := store.MemoryQueue.ListState(context.Background(), rptNamespace, clock.Now())
	if len(all) != 4 {
		t.Errorf("%d entries, want 2 domains × 2 instances: %v", len(all), all)
	}
}

// A store that refuses the write keeps the counts in memory: the writer's
// report still has them, nobody else sees them, and the next flush saves
// them exactly once.
func TestTLSReportFailedSaveKeepsCounts(t *testing.T) {
	w, clock := rptWorld(t)
	store := &countingStore{MemoryQueue: newMemQueue()}
	a := w.rptMailer(store, clock, time.Hour)
	sendBoth(t, a, 2)
	store.setFailPut(true)
	if err := a.tlsrpt.flush(context.Background()); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("flush on a failing store: %v", err)
	}
	if got := summary(t, a, "other.test", clock); got != "sts ok=0 failed=2 certificate-host-mismatch@mx.other.test×2" {
		t.Errorf("the writer after a failed save: %s", got)
	}
	c := w.rptMailer(store, clock, time.Hour)
	if got := summary(t, c, "other.test", clock); got != "none" {
		t.Errorf("another instance saw unsaved counts: %s", got)
	}
	sendBoth(t, a, 1) // counted meanwhile: saved with the rest
	store.setFailPut(false)
	if err := a.tlsrpt.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]*Mailer{"writer": a, "other": c} {
		if got := summary(t, m, "other.test", clock); got != "sts ok=0 failed=3 certificate-host-mismatch@mx.other.test×3" {
			t.Errorf("%s after the retry: %s", name, got)
		}
		if got := summary(t, m, "dest.test", clock); got != "sts ok=1 failed=0" {
			t.Errorf("%s after the retry: %s", name, got)
		}
	}
}

// Sends never touch the store for TLS-RPT; a flush writes one entry per
// domain with new counts, and nothing when there is none.
func TestTLSReportStoreCalls(t *testing.T) {
	w, clock := rptWorld(t)
	store := &countingStore{MemoryQueue: newMemQueue()}
	a := w.rptMailer(store, clock, time.Hour)
	sendBoth(t, a, 3)
	if calls := store.take(); len(calls) != 0 {
		t.Errorf("store calls during sends: %v", calls)
	}
	a.tlsrpt.flush(context.Background())
	calls := store.take()
	if len(calls) != 2 || !strings.HasPrefix(calls[0], "put ") || !strings.HasPrefix(calls[1], "put ") ||
		!strings.Contains(strings.Join(calls, " "), "/dest.test") || !strings.Contains(strings.Join(calls, " "), "/other.test") {
		t.Errorf("a flush: %v, want one put per domain", calls)
	}
	a.tlsrpt.flush(context.Background())
	if calls := store.take(); len(calls) != 0 {
		t.Errorf("a flush with nothing new: %v", calls)
	}
	sendBoth(t, a, 1) // dest.test's session is reused: only other.test counts
	if calls := store.take(); len(calls) != 0 {
		t.Errorf("store calls during a send: %v", calls)
	}
	a.tlsrpt.flush(context.Background())
	if calls := store.take(); len(calls) != 1 || !strings.HasSuffix(calls[0], "/other.test") {
		t.Errorf("a flush after one more send: %v", calls)
	}
	a.TLSReport("other.test", TLSReportOptions{Day: clock.Now()})
	if calls := store.take(); len(calls) != 1 || calls[0] != "list" {
		t.Errorf("a report: %v", calls)
	}
}

// The counts are saved on their own, every flush interval.
func TestTLSReportFlushesPeriodically(t *testing.T) {
	w, clock := rptWorld(t)
	store := &countingStore{MemoryQueue: newMemQueue()}
	a := w.rptMailer(store, clock, 20*time.Millisecond)
	sendBoth(t, a, 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		all, _ := store.MemoryQueue.ListState(context.Background(), rptNamespace, clock.Now())
		if len(all) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not saved within 10 s: %v", all)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := w.rptMailer(store, clock, time.Hour)
	if got := summary(t, c, "other.test", clock); got != "sts ok=0 failed=1 certificate-host-mismatch@mx.other.test×1" {
		t.Errorf("another instance: %s", got)
	}
}

// Entries of days past rptStoreKeep are swept, whichever instance wrote
// them, and never reported, even before the sweep; younger ones stay.
// The sweep is the store's own: an entry expires at the end of its day's
// keep, and the store removes what has expired.
func TestTLSReportSweep(t *testing.T) {
	w, clock := rptWorld(t) // 2026-11-28 12:00
	store := &countingStore{MemoryQueue: newMemQueue()}
	store.MemoryQueue.memoryState.now = clock.Now // the store sweeps by the test's clock
	a := w.rptMailer(store, clock, time.Hour)
	ctx := context.Background()
	entry := func(day string) []byte {
		return []byte(`{"v":1,"day":"` + day + `","domain":"dest.test","policies":[{"type":"sts","domain":"dest.test","ok":4}]}`)
	}
	old, kept := "2026-11-24/0123456789abcdef/dest.test", "2026-11-25/0123456789abcdef/dest.test"
	days := map[string]string{old: "2026-11-24", kept: "2026-11-25"}
	// Still held with a later expiry, as an earlier version wrote them:
	// the day past the keep is not reported all the same.
	for key, day := range days {
		store.MemoryQueue.PutState(ctx, rptNamespace, key, entry(day), clock.Now().Add(30*24*time.Hour))
	}
	if r := a.TLSReport("dest.test", TLSReportOptions{Day: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}); r != nil {
		t.Errorf("a day past the keep: %+v", r)
	}
	if r := a.TLSReport("dest.test", TLSReportOptions{Day: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}); r == nil || r.Policies[0].Summary.Successful != 4 {
		t.Errorf("a day still kept: %+v", r)
	}

	// As this version writes them, and as the Mailer's flush does.
	for key, day := range days {
		d, _ := time.Parse("2006-01-02", day)
		store.MemoryQueue.PutState(ctx, rptNamespace, key, entry(day), rptExpires(d.Unix()/86400))
	}
	sendBoth(t, a, 1)
	if err := a.tlsrpt.flush(ctx); err != nil {
		t.Fatal(err)
	}
	today := clock.Now().Unix() / 86400
	all, _ := store.MemoryQueue.ListState(ctx, rptNamespace, clock.Now())
	for key := range all {
		if key == kept {
			continue
		}
		if _, ok, _ := store.MemoryQueue.GetState(ctx, rptNamespace, key, rptExpires(today).Add(-time.Nanosecond)); !ok {
			t.Errorf("%s: gone before the end of its keep", key)
		}
		if _, ok, _ := store.MemoryQueue.GetState(ctx, rptNamespace, key, rptExpires(today)); ok {
			t.Errorf("%s: kept past the end of its keep", key)
		}
	}
	store.MemoryQueue.memoryState.mu.Lock()
	store.MemoryQueue.memoryState.sweepLocked(clock.Now())
	left := store.MemoryQueue.memoryState.ns[rptNamespace]
	_, keptLeft := left[kept]
	_, oldLeft := left[old]
	n := len(left)
	store.MemoryQueue.memoryState.mu.Unlock()
	if oldLeft || !keptLeft || n != 3 { // kept, and today's two
		t.Errorf("left after the sweep: old %v, kept %v, %d entries", oldLeft, keptLeft, n)
	}
}

// Without a queue that keeps state, counts stay in the Mailer: nothing is
// saved in its in-memory StateStore, which would only hold a second copy.
func TestTLSReportWithoutStore(t *testing.T) {
	w, clock := rptWorld(t)
	a := w.mailer(Config{now: clock.Now, MaxConnsPerHost: 1}, false)
	sendBoth(t, a, 2)
	if err := a.tlsrpt.flush(context.Background()); err != nil || a.tlsrpt.store != nil {
		t.Fatalf("flush %v, store %v", err, a.tlsrpt.store)
	}
	if all, _ := a.state.ListState(context.Background(), rptNamespace, clock.Now()); len(all) != 0 {
		t.Errorf("saved in memory: %v", all)
	}
	if got := summary(t, a, "other.test", clock); got != "sts ok=0 failed=2 certificate-host-mismatch@mx.other.test×2" {
		t.Errorf("other.test: %s", got)
	}
}
