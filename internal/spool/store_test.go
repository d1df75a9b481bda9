package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{})

	m1 := testMessage("m1", t0, "a@example.com", "b@example.net")
	m1.Recipients[1].NextAttempt = t0.Add(time.Hour) // only one recipient needs to be due
	m2 := testMessage("m2", t0.Add(10*time.Minute), "c@example.com")
	m3 := testMessage("", t0.Add(time.Hour), "d@example.com") // ID assigned
	m3.From = ""                                              // null sender
	m3.Created = t0.Add(time.Second)
	bodies := map[string][]byte{}
	for i, m := range []*Message{m1, m2, m3} {
		size := 2048
		if i == 2 {
			size = 3<<20 + 7 // several copy buffers
		}
		b := testBody(size, uint64(i))
		enqueueT(t, s, m, b)
		bodies[m.ID] = b
	}
	if len(m3.ID) != 28 || checkID(m3.ID) != nil {
		t.Fatalf("assigned ID %q: want 28 filename-safe characters", m3.ID)
	}
	// Before any checkpoint: files only for the large body (a journaled
	// message's body and state are written by the checkpoint).
	if got, want := files(t, dir, "queue"), []string{m3.ID + ".eml", m3.ID + ".json"}; !slices.Equal(got, want) {
		t.Errorf("queue/ = %v, want %v", got, want)
	}

	want := []*Message{clone(m1), clone(m3), clone(m2)} // by Created
	if got := listT(t, s); !reflect.DeepEqual(got, want) {
		t.Fatalf("List =\n%v\nwant\n%v", dump(got), dump(want))
	}

	lease := func(now time.Time, max int) []string {
		t.Helper()
		ms, err := s.Lease(ctx, now, max, 5*time.Minute)
		if err != nil {
			t.Fatalf("Lease: %v", err)
		}
		return ids(ms)
	}
	check := func(got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("leased %v, want %v", got, want)
		}
	}
	check(lease(t0.Add(-time.Second), 10))        // nothing due yet
	check(lease(t0, 10), "m1")                    // due
	check(lease(t0, 10))                          // leased: not twice
	check(lease(t0.Add(4*time.Minute), 10))       // still leased, m2 not due
	check(lease(t0.Add(10*time.Minute), 1), "m1") // lease expired; earliest due first
	check(lease(t0.Add(10*time.Minute), 1), "m2")
	s.Release("m1")
	s.Release("m2")
	s.Release("unknown") // ignored
	check(lease(t0.Add(2*time.Hour), 10), "m1", "m2", m3.ID)
	for _, id := range []string{"m1", "m2", m3.ID} {
		s.Release(id)
	}

	for id, b := range bodies {
		if got := bodyT(t, s, id); !bytes.Equal(got, b) {
			t.Errorf("Body(%s): %d bytes differ from the %d enqueued", id, len(got), len(b))
		}
	}
	if _, err := s.Body(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Body(unknown) = %v, want ErrNotFound", err)
	}

	// A delivery attempt: one recipient done, the other deferred.
	leased, err := s.Lease(ctx, t0, 1, time.Minute)
	if err != nil || len(leased) != 1 || leased[0].ID != "m1" {
		t.Fatalf("Lease = %v, %v", ids(leased), err)
	}
	u := leased[0]
	u.Recipients = u.Recipients[1:]
	u.Recipients[0].Attempts = 1
	u.Recipients[0].DirectAttempts = 1
	u.Recipients[0].LastError = "451 4.7.1 try later \xff" // not UTF-8: stored as JSON would
	u.Recipients[0].NextAttempt = t0.Add(30 * time.Minute)
	u.Meta["x"] = "y"
	if err := s.Update(ctx, u); err != nil {
		t.Fatalf("Update: %v", err)
	}
	check(lease(t0.Add(29*time.Minute), 10), "m2") // m1's lease ended, but it is not due until 30m
	stale, err := s.Lease(ctx, t0.Add(30*time.Minute), 10, 5*time.Minute)
	if err != nil || len(stale) != 1 || stale[0].ID != "m1" {
		t.Fatalf("Lease = %v, %v", ids(stale), err)
	}

	// A worker whose lease ran out and was granted again loses.
	fresh, _ := s.Lease(ctx, t0.Add(40*time.Minute), 10, time.Minute)
	check(ids(fresh), "m2", "m1")
	s.Release("m2")
	fresh = fresh[1:]
	if err := s.Update(ctx, leased[0]); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Update with an old lease = %v, want ErrLeaseLost", err)
	}
	if err := s.Update(ctx, stale[0]); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Update with a lost lease = %v, want ErrLeaseLost", err)
	}
	if err := s.Update(ctx, fresh[0]); err != nil {
		t.Errorf("Update by the new lease holder: %v", err)
	}
	// Update ended that lease: its token is spent.
	if err := s.Update(ctx, fresh[0]); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("second Update with a spent lease = %v, want ErrLeaseLost", err)
	}

	// The last recipient done: the message goes, files and all.
	done := clone(m2)
	done.Recipients = nil
	if err := s.Update(ctx, done); err != nil {
		t.Fatalf("Update (delete): %v", err)
	}
	for _, f := range files(t, dir, "queue") {
		if strings.HasPrefix(f, "m2.") {
			t.Errorf("queue/%s left after delete", f)
		}
	}
	if _, err := s.Body(ctx, "m2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Body after delete = %v, want ErrNotFound", err)
	}
	if err := s.Update(ctx, done); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update after delete = %v, want ErrNotFound", err)
	}

	before := listT(t, s)
	if len(before) != 2 || before[0].Recipients[0].LastError != "451 4.7.1 try later \uFFFD" {
		t.Fatalf("List before reopen = %s", dump(before))
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open of an open spool = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("List after Close = %v, want ErrClosed", err)
	}
	if err := s.Enqueue(ctx, testMessage("late", t0, "a@b"), strings.NewReader("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close = %v, want ErrClosed", err)
	}

	s2 := openT(t, dir, Options{})
	if after := listT(t, s2); !reflect.DeepEqual(after, before) {
		t.Fatalf("after reopen:\n%s\nbefore:\n%s", dump(after), dump(before))
	}
	for _, id := range []string{"m1", m3.ID} {
		if !bytes.Equal(bodyT(t, s2, id), bodies[id]) {
			t.Errorf("Body(%s) differs after reopen", id)
		}
	}
	check2, _ := s2.Lease(ctx, t0.Add(2*time.Hour), 10, time.Minute) // leases do not survive
	if len(check2) != 2 {
		t.Errorf("after reopen Lease = %v, want both", ids(check2))
	}
}

func TestEnqueueRejects(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{NoSync: true})
	enqueueT(t, s, testMessage("dup", t0, "a@example.com"), []byte("x"))
	for _, tc := range []struct {
		name string
		m    *Message
		want error
	}{
		{"duplicate", testMessage("dup", t0, "a@example.com"), ErrExists},
		{"path", testMessage("../x", t0, "a@example.com"), nil},
		{"dot", testMessage("a.json", t0, "a@example.com"), nil},
		{"long", testMessage(strings.Repeat("a", 129), t0, "a@example.com"), nil},
		{"no recipients", testMessage("none", t0), nil},
		{"empty recipient", testMessage("empty", t0, ""), nil},
		{"bad UTF-8", testMessage("utf", t0, "\xff@example.com"), nil},
	} {
		err := s.Enqueue(ctx, tc.m, strings.NewReader("body"))
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: Enqueue = %v, want an error (%v)", tc.name, err, tc.want)
		}
	}
	if l := listT(t, s); len(l) != 1 {
		t.Errorf("List = %v, want only dup", ids(l))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Enqueue(cctx, testMessage("c", t0, "a@b"), strings.NewReader("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue with a cancelled context = %v", err)
	}
}

// TestConcurrent runs writers, leasers and updaters at once (for -race) and
// checks that the store on disk ends up as the one in memory.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	const writers, perWriter = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				m := testMessage(fmt.Sprintf("w%d-%d", w, i), t0, "a@example.com", "b@example.com")
				if err := s.Enqueue(ctx, m, bytes.NewReader(testBody(512, uint64(w*1000+i)))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 50 {
				ms, err := s.Lease(ctx, t0, 3, time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				for _, m := range ms {
					if _, err := s.Body(ctx, m.ID); err != nil {
						t.Error(err)
					}
					m.Recipients = m.Recipients[1:] // one delivered per attempt
					if err := s.Update(ctx, m); err != nil {
						t.Error(err)
					}
				}
				_, _ = s.List(ctx)
			}
		})
	}
	wg.Wait()
	before := listT(t, s)
	s.Close()
	after := listT(t, openT(t, dir, Options{}))
	if !reflect.DeepEqual(after, before) {
		t.Fatalf("reopened store differs: %d messages, had %d", len(after), len(before))
	}
	if got := len(files(t, dir, "queue")); got != 2*len(after) {
		t.Errorf("queue/ has %d files for %d messages", got, len(after))
	}
}

func dump(ms []*Message) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%+v\n", *m)
	}
	return b.String()
}
