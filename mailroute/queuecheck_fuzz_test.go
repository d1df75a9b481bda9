package mailroute

import (
	"testing"
)

// FuzzCheckQueued: whatever a store hands back, checkQueued passes only a
// message Send itself could have queued — its sender and recipients are
// exactly what parseEnvelope makes of them, no recipient repeats — and
// anything it passes can be grouped for delivery without a panic. The seeds
// are the tampered states of TestQueueQuarantinesTamperedState and valid
// ones; the corpus is in testdata/fuzz/FuzzCheckQueued.
func FuzzCheckQueued(f *testing.F) {
	for _, s := range [][4]string{
		{"a@sender.test", "x@dest.test", "y@dest.test", ""},
		{"", "x@dest.test", "", ""},
		{"a b@sender.test", "x@dest.test", "", ""},
		{"a@sender.test> RET=FULL", "x@dest.test", "", ""},
		{"a@sender.test", "not-an-address", "", ""},
		{"a@sender.test", "x@dest.test> NOTIFY=NEVER", "", ""},
		{"a@sender.test", "x@DEST.test", "", ""},
		{"a@sender.test", "x@dest.test", "x@dest.test", ""},
		{"\"a b\"@sender.test", "x@[127.0.0.1]", "ü@bücher.test", "451 4.3.0 later"},
		{"<>", "x@xn--bcher-kva.test", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], 1, 0)
	}
	f.Fuzz(func(t *testing.T, from, r1, r2, lastErr string, attempts, direct int) {
		qm := &QueuedMessage{ID: "fuzz", From: from}
		for _, r := range []string{r1, r2} {
			if r != "" {
				qm.Recipients = append(qm.Recipients, QueuedRecipient{Rcpt: r, Attempts: attempts, DirectAttempts: direct, LastError: lastErr})
			}
		}
		if checkQueued(qm) != nil {
			return
		}
		var to []string
		for _, r := range qm.Recipients {
			to = append(to, r.Rcpt)
		}
		env, _, err := parseEnvelope(from, to)
		if err != nil {
			t.Fatalf("checkQueued passed %+v, which Send refuses: %v", qm, err)
		}
		if env.from != from {
			t.Fatalf("checkQueued passed sender %q, which Send would store as %q", from, env.from)
		}
		if len(env.rcpts) != len(qm.Recipients) {
			t.Fatalf("checkQueued passed %d recipients, Send keeps %d (a repeat)", len(qm.Recipients), len(env.rcpts))
		}
		for i, a := range env.rcpts {
			if a.String() != qm.Recipients[i].Rcpt || a.Domain == "" || domainOf(a.String()) != a.Domain {
				t.Fatalf("checkQueued passed recipient %q, which Send would store as %q (domain %q)", qm.Recipients[i].Rcpt, a.String(), a.Domain)
			}
		}
	})
}
