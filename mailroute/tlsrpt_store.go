package mailroute

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"
)

// TLS-RPT counts are saved through the StateStore so that a restart keeps
// the day's counts and every instance sharing a store adds to one report.
//
// Each Mailer is an instance with a random name of its own, and writes
// only its own entries: one per policy domain and UTC day, under
// "<day>/<instance>/<domain>", holding everything that instance counted
// for that domain that day. So two processes never write the same key and
// no entry is ever read, changed and written back across processes; a
// restarted Mailer is a new instance whose entries sit beside the old
// one's. Sends only count in memory, as before; flush moves those deltas
// into the instance's entries every rptFlushInterval and at Shutdown, and
// takes a delta out of memory only once the store has said it is durable.
// A report reads every instance's entries of the day and, for this
// instance, its own saved counts and the part not yet flushed from memory,
// under one lock, so nothing is counted twice or missed.

// rptNamespace is the StateStore namespace of the saved counts.
const rptNamespace = "tlsrpt"

// rptFlushInterval is how often counts are saved: what a crash can lose.
const rptFlushInterval = time.Minute

// rptStoreKeep is how long a day's counts are kept after the day ends:
// long enough for a report sent the day after, or a few days late after
// an outage. An entry expires then (rptExpires), and the store removes
// it, whichever instance wrote it (StateStore).
const rptStoreKeep = 3 * 24 * time.Hour

// dayEnd is the end of a day since the Unix epoch.
func dayEnd(day int64) time.Time { return time.Unix((day+1)*86400, 0) }

// rptExpires is the expiry of the entries of day: the end of its keep.
func rptExpires(day int64) time.Time { return dayEnd(day).Add(rptStoreKeep) }

// rptDayKept reports whether the counts of day are still kept at now.
func rptDayKept(day int64, now time.Time) bool { return now.Before(rptExpires(day)) }

// rptMaxFailures caps the failure details kept per policy, so that an
// entry stays far below the StateStore's 64 KiB per value (a detail holds
// up to 200 bytes of reason and an MX host name). Details beyond it are
// folded, with their counts, into one per result type whose
// additional-information says so: the summary and the sum of the details
// stay exact.
const rptMaxFailures = 50

// rptOverflowReason marks the detail that holds the folded ones.
const rptOverflowReason = "further failures of this type, not itemised"

// rptMaxPolicies caps the policies of one domain and day read back from a
// store; a real domain has one or two (a policy changed during the day).
const rptMaxPolicies = 64

// rptMaxCount bounds a count read back from a store, so that sums over
// instances cannot overflow.
const rptMaxCount = 1 << 40

// rptMaxValue is the StateStore's limit on a value.
const rptMaxValue = 64 << 10

// rptResultTypes are RFC 8460 §4.3's result types.
var rptResultTypes = []string{
	"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
	"certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
	"dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
}

// rptDayKey is one policy domain on one UTC day.
type rptDayKey struct {
	day    int64 // days since the Unix epoch
	domain string
}

// rptDayAgg is the counts of one rptDayKey, by policy key.
type rptDayAgg map[string]*rptBucket

func dayOfHour(hour int64) int64 { return hour / 24 }

func dayString(day int64) string { return time.Unix(day*86400, 0).UTC().Format("2006-01-02") }

// rptKey is the StateStore key of an instance's entry. A domain too long
// for the 255-byte key limit is named by a hash: the entry holds the
// domain itself.
func rptKey(day int64, instance, domain string) string {
	k := dayString(day) + "/" + instance + "/" + domain
	if len(k) > 255 {
		h := sha256.Sum256([]byte(domain))
		k = dayString(day) + "/" + instance + "/#" + hex.EncodeToString(h[:16])
	}
	return k
}

// parseRptKey returns the day and instance a key names.
func parseRptKey(key string) (day string, instance string, ok bool) {
	day, rest, ok := strings.Cut(key, "/")
	if !ok {
		return "", "", false
	}
	instance, _, ok = strings.Cut(rest, "/")
	return day, instance, ok
}

func newInstanceName() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand's contract since Go 1.24)
	return hex.EncodeToString(b[:])
}

// add adds the counts of b to the policy key pk of a.
func (a rptDayAgg) add(pk string, b *rptBucket) {
	d := a[pk]
	if d == nil {
		d = &rptBucket{policy: b.policy, failures: make(map[rptFailureKey]int64)}
		a[pk] = d
	}
	d.success += b.success
	for fk, n := range b.failures {
		d.failures[fk] += n
	}
}

func (a rptDayAgg) clone() rptDayAgg {
	c := make(rptDayAgg, len(a))
	for pk, b := range a {
		c.add(pk, b)
	}
	return c
}

// capFailures folds the details of b beyond rptMaxFailures, the rarest
// first, into one detail per result type; counts are kept.
func capFailures(b *rptBucket) {
	type kn struct {
		k rptFailureKey
		n int64
	}
	var items []kn
	for k, n := range b.failures {
		if k.mx == "" && k.reason == rptOverflowReason {
			continue // already folded: it stays
		}
		items = append(items, kn{k, n})
	}
	if len(items) <= rptMaxFailures {
		return
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].n != items[j].n {
			return items[i].n > items[j].n
		}
		return lessFailureKey(items[i].k, items[j].k)
	})
	for _, it := range items[rptMaxFailures:] {
		delete(b.failures, it.k)
		b.failures[rptFailureKey{resultType: it.k.resultType, reason: rptOverflowReason}] += it.n
	}
}

func lessFailureKey(a, b rptFailureKey) bool {
	if a.resultType != b.resultType {
		return a.resultType < b.resultType
	}
	if a.mx != b.mx {
		return a.mx < b.mx
	}
	return a.reason < b.reason
}

// rptEntry is an instance's saved counts of one domain and day, as JSON.
type rptEntry struct {
	V        int              `json:"v"`
	Day      string           `json:"day"`
	Domain   string           `json:"domain"`
	Policies []rptEntryPolicy `json:"policies"`
}

type rptEntryPolicy struct {
	Type     string            `json:"type"`
	Domain   string            `json:"domain"`
	Strings  []string          `json:"strings,omitempty"`
	MXHost   []string          `json:"mx,omitempty"`
	Success  int64             `json:"ok"`
	Failures []rptEntryFailure `json:"failed,omitempty"`
}

type rptEntryFailure struct {
	Type   string `json:"type"`
	MX     string `json:"mx,omitempty"`
	Reason string `json:"reason,omitempty"`
	N      int64  `json:"n"`
}

// encodeRpt serialises a day's counts, in a stable order. Details are
// capped first; should the entry still exceed a StateStore value, every
// detail is folded into its result type's.
func encodeRpt(dk rptDayKey, agg rptDayAgg) ([]byte, error) {
	for _, b := range agg {
		capFailures(b)
	}
	e := rptEntry{V: 1, Day: dayString(dk.day), Domain: dk.domain}
	pks := make([]string, 0, len(agg))
	for pk := range agg {
		pks = append(pks, pk)
	}
	sort.Strings(pks)
	for _, pk := range pks {
		b := agg[pk]
		p := rptEntryPolicy{Type: b.policy.Type, Domain: b.policy.Domain, Strings: b.policy.Strings, MXHost: b.policy.MXHost, Success: b.success}
		for fk, n := range b.failures {
			if n > 0 {
				p.Failures = append(p.Failures, rptEntryFailure{Type: fk.resultType, MX: fk.mx, Reason: fk.reason, N: n})
			}
		}
		sort.Slice(p.Failures, func(i, j int) bool {
			a, b := p.Failures[i], p.Failures[j]
			return lessFailureKey(rptFailureKey{a.Type, a.MX, a.Reason}, rptFailureKey{b.Type, b.MX, b.Reason})
		})
		e.Policies = append(e.Policies, p)
	}
	out, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if len(out) > rptMaxValue {
		for i := range e.Policies {
			e.Policies[i].Failures = foldAll(e.Policies[i].Failures)
		}
		if out, err = json.Marshal(e); err != nil {
			return nil, err
		}
		if len(out) > rptMaxValue {
			return nil, fmt.Errorf("the counts of %s on %s take %d bytes, over a StateStore value's %d", dk.domain, e.Day, len(out), rptMaxValue)
		}
	}
	return out, nil
}

func foldAll(fs []rptEntryFailure) []rptEntryFailure {
	by := make(map[string]int64)
	for _, f := range fs {
		by[f.Type] += f.N
	}
	out := make([]rptEntryFailure, 0, len(by))
	for t, n := range by {
		out = append(out, rptEntryFailure{Type: t, Reason: rptOverflowReason, N: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// decodeRpt reads an entry back. What a store returns is caller input: a
// value that is not what encodeRpt could have written — unknown fields or
// versions, a policy or result type RFC 8460 does not define, negative or
// absurd counts, oversized strings, too many details — is refused, so a
// report never carries it.
func decodeRpt(value []byte) (rptDayKey, rptDayAgg, error) {
	var e rptEntry
	dec := json.NewDecoder(strings.NewReader(string(value)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return rptDayKey{}, nil, err
	}
	if dec.More() {
		return rptDayKey{}, nil, errors.New("data after the entry")
	}
	if e.V != 1 {
		return rptDayKey{}, nil, fmt.Errorf("version %d", e.V)
	}
	t, err := time.Parse("2006-01-02", e.Day)
	if err != nil || dayString(t.Unix()/86400) != e.Day {
		return rptDayKey{}, nil, fmt.Errorf("day %q", e.Day)
	}
	if d, err := parseDestination(e.Domain); err != nil || d.Domain != e.Domain || d.IsLiteral() {
		return rptDayKey{}, nil, fmt.Errorf("domain %q", e.Domain)
	}
	if len(e.Policies) == 0 || len(e.Policies) > rptMaxPolicies {
		return rptDayKey{}, nil, fmt.Errorf("%d policies", len(e.Policies))
	}
	dk := rptDayKey{day: t.Unix() / 86400, domain: e.Domain}
	agg := make(rptDayAgg)
	for _, p := range e.Policies {
		if !slices.Contains([]string{"tlsa", "sts", "no-policy-found"}, p.Type) {
			return rptDayKey{}, nil, fmt.Errorf("policy type %q", p.Type)
		}
		if p.Domain != e.Domain {
			return rptDayKey{}, nil, fmt.Errorf("policy domain %q in the entry of %s", p.Domain, e.Domain)
		}
		if len(p.Strings)+len(p.MXHost) > 1000 {
			return rptDayKey{}, nil, errors.New("too many policy strings")
		}
		if p.Success < 0 || p.Success > rptMaxCount {
			return rptDayKey{}, nil, fmt.Errorf("success count %d", p.Success)
		}
		if len(p.Failures) > rptMaxFailures+len(rptResultTypes) {
			return rptDayKey{}, nil, fmt.Errorf("%d failure details", len(p.Failures))
		}
		b := &rptBucket{policy: rptPolicy{Type: p.Type, Domain: p.Domain, Strings: p.Strings, MXHost: p.MXHost}, success: p.Success,
			failures: make(map[rptFailureKey]int64)}
		for _, f := range p.Failures {
			if !slices.Contains(rptResultTypes, f.Type) || len(f.MX) > 255 || len(f.Reason) > 200 || f.N < 1 || f.N > rptMaxCount {
				return rptDayKey{}, nil, fmt.Errorf("failure detail %+v", f)
			}
			b.failures[rptFailureKey{resultType: f.Type, mx: f.MX, reason: f.Reason}] += f.N
		}
		if agg[b.policy.key()] != nil {
			return rptDayKey{}, nil, errors.New("a policy listed twice")
		}
		agg[b.policy.key()] = b
	}
	return dk, agg, nil
}

// startTLSRPT sets up the saving of TLS-RPT counts for New: in the
// queue's store when it keeps state. Without one, counts stay in memory:
// the Mailer's in-memory StateStore would only hold a second copy.
func (m *Mailer) startTLSRPT() {
	st, _ := m.cfg.Queue.(StateStore)
	m.tlsrpt.start(st, m.cfg.logger(), m.cfg.tlsrptFlush, m.closed)
}

// start begins saving the counts through store (nil: none), every
// interval, until done is closed.
func (r *tlsReporter) start(store StateStore, log *slog.Logger, interval time.Duration, done <-chan struct{}) {
	r.store, r.log, r.instance = store, log, newInstanceName()
	if interval <= 0 {
		interval = rptFlushInterval
	}
	if store == nil {
		return // counts live in memory only
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				r.flush(ctx)
				cancel()
			}
		}
	}()
}

// rptTaken is the part of one in-memory bucket a flush saves: subtracted
// from the bucket once saved, so that what was counted meanwhile stays.
type rptTaken struct {
	key      rptBucketKey
	success  int64
	failures map[rptFailureKey]int64
}

// flush saves the counts not yet saved: per domain and day with new
// counts, one PutState of the instance's entry (its saved counts plus the
// new ones). A failed write is logged and its counts stay in memory for
// the next flush. It returns the first error, for Shutdown's tests.
func (r *tlsReporter) flush(ctx context.Context) error {
	if r.store == nil {
		return nil
	}
	r.flushMu.Lock()
	defer r.flushMu.Unlock()

	r.mu.Lock()
	taken := make(map[rptDayKey][]rptTaken)
	next := make(map[rptDayKey]rptDayAgg)
	for k, b := range r.buckets {
		if b.success == 0 && len(b.failures) == 0 {
			continue
		}
		dk := rptDayKey{day: dayOfHour(k.hour), domain: k.domain}
		t := rptTaken{key: k, success: b.success, failures: make(map[rptFailureKey]int64, len(b.failures))}
		for fk, n := range b.failures {
			t.failures[fk] = n
		}
		taken[dk] = append(taken[dk], t)
		agg := next[dk]
		if agg == nil {
			agg = r.saved[dk].clone()
			next[dk] = agg
		}
		agg.add(k.policy, b)
	}
	r.mu.Unlock()

	var first error
	for dk, agg := range next {
		value, err := encodeRpt(dk, agg)
		if err == nil {
			err = r.store.PutState(ctx, rptNamespace, rptKey(dk.day, r.instance, dk.domain), value, rptExpires(dk.day))
		}
		if err != nil {
			r.log.Error("mailroute: TLS-RPT counts not saved; kept in memory for the next try",
				"domain", dk.domain, "day", dayString(dk.day), "err", err)
			if first == nil {
				first = err
			}
			continue
		}
		r.mu.Lock()
		if r.saved == nil {
			r.saved = make(map[rptDayKey]rptDayAgg)
		}
		r.saved[dk] = agg
		for _, t := range taken[dk] {
			b := r.buckets[t.key]
			if b == nil {
				continue
			}
			b.success -= t.success
			for fk, n := range t.failures {
				if b.failures[fk] -= n; b.failures[fk] <= 0 {
					delete(b.failures, fk)
				}
			}
			if b.success == 0 && len(b.failures) == 0 {
				delete(r.buckets, t.key)
			}
		}
		r.mu.Unlock()
	}
	return first
}

// dayCounts returns the counts of domain on day (every domain when domain
// is ""), merged over every instance's saved entries and this instance's
// unsaved counts. An error means the store could not be listed.
func (r *tlsReporter) dayCounts(ctx context.Context, day int64, domain string) (map[string]rptDayAgg, error) {
	var stored map[string][]byte
	if r.store != nil && rptDayKept(day, r.now()) {
		var err error
		if stored, err = r.store.ListState(ctx, rptNamespace, r.now()); err != nil {
			return nil, err
		}
	}
	return r.merge(stored, day, domain), nil
}

// merge adds up the stored entries (a ListState of rptNamespace) of day
// and domain ("": every domain) with this instance's own counts.
func (r *tlsReporter) merge(stored map[string][]byte, day int64, domain string) map[string]rptDayAgg {
	want := dayString(day)
	out := make(map[string]rptDayAgg)
	if !rptDayKept(day, r.now()) {
		return out // swept, or about to be: never half a day
	}
	into := func(d string) rptDayAgg {
		a := out[d]
		if a == nil {
			a = make(rptDayAgg)
			out[d] = a
		}
		return a
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	for key, value := range stored {
		kday, inst, ok := parseRptKey(key)
		if !ok || kday != want {
			continue
		}
		dk, agg, err := decodeRpt(value)
		if err == nil && (dk.day != day || key != rptKey(day, inst, dk.domain)) {
			err = errors.New("the entry is not the one its key names")
		}
		if err != nil {
			r.log.Error("mailroute: a saved TLS-RPT entry is refused", "key", key, "err", err)
			continue
		}
		if domain != "" && dk.domain != domain {
			continue
		}
		if inst == r.instance {
			// This instance's counts are r.saved, read below under the
			// same lock as the unsaved part: the store may already hold
			// a flush whose counts are still in memory.
			continue
		}
		a := into(dk.domain)
		for pk, b := range agg {
			a.add(pk, b)
		}
	}
	for dk, agg := range r.saved {
		if dk.day == day && (domain == "" || dk.domain == domain) {
			a := into(dk.domain)
			for pk, b := range agg {
				a.add(pk, b)
			}
		}
	}
	for k, b := range r.buckets {
		if dayOfHour(k.hour) == day && (domain == "" || k.domain == domain) && (b.success != 0 || len(b.failures) != 0) {
			into(k.domain).add(k.policy, b)
		}
	}
	return out
}
