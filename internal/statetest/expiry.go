package statetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Storage is a store opened for RunExpiry, with what the contract test
// needs to see into it.
type Storage struct {
	Store Store
	// Sweep runs the store's removal of expired entries as its own clock
	// would at now, and returns once it is done, with its error.
	Sweep func(ctx context.Context, now time.Time) error
	// Stored counts the entries held in storage, expired ones included,
	// directly: files in the directory, rows in the table, map entries.
	Stored func() int
	// FailSweep, when not nil, makes the sweep's removals fail (true) or
	// succeed again (false), the way the storage itself would fail.
	FailSweep func(fail bool)
	// Logged returns what the store has logged so far; with FailSweep.
	Logged func() string
}

// RunExpiry checks that a store removes what has expired: an expired
// entry is gone from storage after a sweep, an unexpired one is
// untouched, a sweep racing a PutState of the same key never removes the
// fresh value, and a sweep that fails is logged and changes nothing else.
func RunExpiry(t *testing.T, st Storage) {
	ctx := context.Background()
	s := st.Store
	now := time.Now().UTC().Truncate(time.Second)
	put := func(ns, key, v string, exp time.Time) {
		t.Helper()
		if err := s.PutState(ctx, ns, key, []byte(v), exp); err != nil {
			t.Fatalf("PutState(%q, %q): %v", ns, key, err)
		}
	}
	want := func(ns, key, v string) {
		t.Helper()
		got, ok, err := s.GetState(ctx, ns, key, now)
		if err != nil || !ok || string(got) != v {
			t.Fatalf("GetState(%q, %q) = %q, %v, %v; want %q", ns, key, got, ok, err, v)
		}
	}
	stored := func(n int) {
		t.Helper()
		if got := st.Stored(); got != n {
			t.Fatalf("%d entries in storage, want %d", got, n)
		}
	}
	sweep := func(at time.Time) {
		t.Helper()
		if err := st.Sweep(ctx, at); err != nil {
			t.Fatalf("sweep: %v", err)
		}
	}

	base := st.Stored()
	put("gc", "live", "stays", now.Add(time.Hour))
	put("gc", "soon", "goes later", now.Add(time.Minute))
	put("gc", "gone", "expired", now.Add(-time.Second))
	put("gc-other", "at-now", "expires now", now)
	stored(base + 4)
	sweep(now)
	stored(base + 2)
	want("gc", "live", "stays")
	want("gc", "soon", "goes later")
	sweep(now) // nothing more to do
	stored(base + 2)
	sweep(now.Add(2 * time.Minute))
	stored(base + 1)
	want("gc", "live", "stays")
	if list, err := s.ListState(ctx, "gc", now); err != nil || len(list) != 1 || string(list["live"]) != "stays" {
		t.Fatalf("ListState after sweeps = %q, %v", list, err)
	}
	sweep(now.Add(2 * time.Hour))
	stored(base)

	// A sweep racing a PutState that renews an expired entry: the renewed
	// value survives, whichever comes first.
	for i := range 40 {
		key := fmt.Sprintf("race%d", i%4)
		put("gc", key, "old", now.Add(-time.Minute))
		fresh := fmt.Sprintf("fresh %d", i)
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := st.Sweep(ctx, now); err != nil {
				t.Errorf("sweep: %v", err)
			}
		})
		wg.Go(func() {
			if err := s.PutState(ctx, "gc", key, []byte(fresh), now.Add(time.Hour)); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		want("gc", key, fresh)
	}
	for i := range 4 {
		if err := s.DeleteState(ctx, "gc", fmt.Sprintf("race%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	stored(base)

	if st.FailSweep == nil {
		return
	}
	put("gc", "stuck", "expired", now.Add(-time.Second))
	put("gc", "live", "stays", now.Add(time.Hour))
	st.FailSweep(true)
	if err := st.Sweep(ctx, now); err == nil {
		t.Fatal("a sweep whose removals fail reports no error")
	}
	if log := st.Logged(); !strings.Contains(log, "not removed") {
		t.Fatalf("the failed sweep was not logged: %q", log)
	}
	stored(base + 2)
	want("gc", "live", "stays")
	if _, ok, err := s.GetState(ctx, "gc", "stuck", now); ok || err != nil {
		t.Fatalf("an expired entry the sweep could not remove is returned: %v, %v", ok, err)
	}
	put("gc", "during", "written while sweeps fail", now.Add(time.Hour))
	want("gc", "during", "written while sweeps fail")
	st.FailSweep(false)
	sweep(now)
	stored(base + 2)
	want("gc", "live", "stays")
	want("gc", "during", "written while sweeps fail")
}
