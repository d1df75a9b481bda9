package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/statetest"
)

// stateFiles counts the files in dir/state.
func stateFiles(t testing.TB, dir string) int {
	t.Helper()
	d, err := os.ReadDir(filepath.Join(dir, stateSub))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(d)
}

// messages returns what r recorded, one line each.
func (r *logRecorder) messages() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, rec := range r.records {
		b.WriteString(rec.Message + "\n")
	}
	return b.String()
}

// The directory store removes the files of expired entries; a removal
// that fails (the disk's error, injected at the remove) is logged and
// retried by the next sweep.
func TestStateExpiry(t *testing.T) {
	dir := t.TempDir()
	var fail atomic.Bool
	log, rec := newLog()
	s := openT(t, dir, Options{NoSync: true, Logger: log, Fault: func(op Op, path string) error {
		if fail.Load() && op == OpRemove && filepath.Base(filepath.Dir(path)) == stateSub {
			return errors.New("injected I/O error")
		}
		return nil
	}})
	s.gc.wg.Wait() // Open's own sweep, of an empty directory
	statetest.RunExpiry(t, statetest.Storage{
		Store: s,
		Sweep: func(ctx context.Context, now time.Time) error {
			_, err := s.SweepState(ctx, now)
			return err
		},
		Stored:    func() int { return stateFiles(t, dir) },
		FailSweep: fail.Store,
		Logged:    rec.messages,
	})
}

// Open sweeps in the background: the expired entries' files go, live
// entries stay, and files the store did not write as they are — damaged,
// or under another entry's name — are left alone, as Get and Put leave
// them.
func TestStateSweptAtOpen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openT(t, dir, Options{NoSync: true})
	// Open's own sweep, of an empty directory, must be over before the
	// expired entries are written, or it may remove them under the test.
	s.gc.wg.Wait()
	now := time.Now()
	for _, k := range []string{"a", "b", "c"} {
		if err := s.PutState(ctx, "ns", "old-"+k, []byte("x"), now.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutState(ctx, "ns", "live", []byte("v"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Damaged; and a copy of an expired entry under another name.
	damaged := s.statePathFor("ns", "damaged")
	if err := os.WriteFile(damaged, []byte(`{"ns":"ns","key":"damaged","expi`), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(s.statePathFor("ns", "old-a"))
	if err != nil {
		t.Fatal(err)
	}
	misnamed := s.statePathFor("ns", "elsewhere")
	if err := os.WriteFile(misnamed, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if n := stateFiles(t, dir); n != 6 {
		t.Fatalf("%d state files before the restart", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openT(t, dir, Options{NoSync: true})
	s2.gc.wg.Wait()
	if n := stateFiles(t, dir); n != 3 {
		t.Fatalf("%d state files after Open's sweep, want 3 (live, damaged, misnamed)", n)
	}
	for _, p := range []string{s2.statePathFor("ns", "live"), damaged, misnamed} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if v, ok, err := s2.GetState(ctx, "ns", "live", now); err != nil || !ok || string(v) != "v" {
		t.Fatalf("live entry: %q, %v, %v", v, ok, err)
	}
}

// After Open's, a sweep starts from PutState or ListState at most once
// per stateSweepEvery, and never from GetState.
func TestStateSweepRateLimited(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openT(t, dir, Options{NoSync: true})
	s.gc.wg.Wait()
	now := time.Now()
	if err := s.PutState(ctx, "ns", "old", []byte("x"), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListState(ctx, "ns", now); err != nil {
		t.Fatal(err)
	}
	s.gc.wg.Wait()
	if n := stateFiles(t, dir); n != 1 {
		t.Fatalf("swept again within stateSweepEvery: %d files", n)
	}

	back := func() {
		s.gc.mu.Lock()
		s.gc.last = s.gc.last.Add(-stateSweepEvery)
		s.gc.mu.Unlock()
	}
	back()
	if _, _, err := s.GetState(ctx, "ns", "old", now); err != nil {
		t.Fatal(err)
	}
	s.gc.wg.Wait()
	if n := stateFiles(t, dir); n != 1 {
		t.Fatalf("GetState started a sweep: %d files", n)
	}
	if _, err := s.ListState(ctx, "ns", now); err != nil {
		t.Fatal(err)
	}
	s.gc.wg.Wait()
	if n := stateFiles(t, dir); n != 0 {
		t.Fatalf("ListState, an interval later, did not sweep: %d files", n)
	}

	if err := s.PutState(ctx, "ns", "old2", []byte("x"), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	back()
	if err := s.PutState(ctx, "ns", "live", []byte("x"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.gc.wg.Wait()
	if n := stateFiles(t, dir); n != 1 {
		t.Fatalf("PutState, an interval later, did not sweep: %d files", n)
	}
}

// A sweep that read an entry expired, and finds it renewed by a PutState
// when it comes to remove it, leaves the new value.
func TestStateSweepSparesRenewedEntry(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openT(t, dir, Options{NoSync: true})
	s.gc.wg.Wait()
	now := time.Now()
	if err := s.PutState(ctx, "ns", "k", []byte("old"), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	path := s.statePathFor("ns", "k")
	e, err := readStateFile(path)
	if err != nil || !s.expiredStateFile(path, e, now) {
		t.Fatalf("the sweep's first read: %+v, %v", e, err)
	}
	if err := s.PutState(ctx, "ns", "k", []byte("fresh"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if removed, err := s.removeExpiredState(path, now); removed || err != nil {
		t.Fatalf("removed %v, %v", removed, err)
	}
	if v, ok, err := s.GetState(ctx, "ns", "k", now); err != nil || !ok || string(v) != "fresh" {
		t.Fatalf("after the sweep: %q, %v, %v", v, ok, err)
	}
}
