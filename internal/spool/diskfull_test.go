//go:build linux

package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDiskFull fills a real, small file system: a 256 KiB tmpfs, which
// needs root to mount. Enqueue must fail with an error wrapping ENOSPC and
// leave nothing behind, the spool must reopen with exactly the messages
// that were reported stored, each whole, and space freed by a delivery
// must be usable again.
func TestDiskFull(t *testing.T) {
	dir := smallTmpfs(t, "the injected ENOSPC of TestInjectedWriteError still runs")
	ctx := context.Background()
	spool := dir + "/spool"
	var mu sync.Mutex
	lastWrite := "" // the file of the last write step, to tell where ENOSPC struck
	committed := 0  // journal fdatasyncs, to tell whether it struck after a commit
	s := openT(t, spool, Options{Fault: func(op Op, path string) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case op == OpWrite:
			lastWrite = filepath.Ext(strings.TrimSuffix(path, ".tmp"))
		case op == OpSync && filepath.Ext(path) == ".log":
			committed++
		}
		return nil
	}})
	struck := func() (string, int) {
		mu.Lock()
		defer mu.Unlock()
		return lastWrite, committed
	}

	bodies := map[string][]byte{}
	var err error
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("m%04d", i)
		// 2 to 5 KiB: one or two pages of body, one of state.
		b := testBody(2048+i*37%3000, uint64(i))
		if err = s.Enqueue(ctx, testMessage(id, t0, "a@example.com"), bytes.NewReader(b)); err != nil {
			break
		}
		bodies[id] = b
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Enqueue on a full disk = %v, want an error wrapping ENOSPC", err)
	}
	if len(bodies) == 0 {
		t.Fatal("nothing fit")
	}
	t.Logf("%d messages fit before ENOSPC: %v", len(bodies), err)
	// A large body fails in the middle of its writes.
	if err := s.Enqueue(ctx, testMessage("big", t0, "a@example.com"), bytes.NewReader(testBody(1<<20, 9))); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Enqueue of a 1 MiB body = %v, want ENOSPC", err)
	}
	// Use up the last pages outside the spool, then deliver a message of a
	// one-page body and a one-page state, both only in the journal: the
	// two pages of reserve held for the files a checkpoint would have
	// written go back at once. A two-page body needs three, which the disk
	// does not have: its Enqueue must fail with ENOSPC before its record is
	// committed, having written nothing (no file, no journal commit), so
	// there is nothing to take back. A one-page body fits in what the
	// delivery gave back.
	fillUp(t, dir)
	if len(bodies["m0000"]) > 4096 {
		t.Fatal("m0000 should take one page")
	}
	if err := s.Update(ctx, &Message{ID: "m0000"}); err != nil {
		t.Fatal(err)
	}
	delete(bodies, "m0000")
	_, before := struck()
	mu.Lock()
	lastWrite = ""
	mu.Unlock()
	err = s.Enqueue(ctx, testMessage("twopages", t0, "a@example.com"), bytes.NewReader(testBody(8000, 7)))
	if file, after := struck(); !errors.Is(err, syscall.ENOSPC) || file != "" || after != before {
		t.Errorf("Enqueue = %v with the last write to a %q file and %d journal commits, want ENOSPC before the commit",
			err, file, after-before)
	}
	onePage := testBody(4000, 8)
	enqueueT(t, s, testMessage("onepage", t0, "a@example.com"), onePage)
	bodies["onepage"] = onePage
	if got := files(t, spool, "tmp"); len(got) != 0 {
		t.Errorf("tmp/ after ENOSPC = %v", got)
	}
	checkStored(t, s, bodies)
	s.Close()

	s2 := openT(t, spool, Options{})
	checkStored(t, s2, bodies)
	if got := files(t, spool, "corrupt"); len(got) != 0 {
		t.Errorf("corrupt/ = %v", got)
	}
	if got := files(t, spool, "queue"); len(got) != 2*len(bodies) {
		t.Errorf("queue/ has %d files for %d messages", len(got), len(bodies))
	}

	// Deliver a few: their space comes back and Enqueue works again.
	leased, _ := s2.Lease(ctx, t0, 3, time.Minute)
	for _, m := range leased {
		m.Recipients = nil
		if err := s2.Update(ctx, m); err != nil {
			t.Fatalf("delete on a full disk: %v", err)
		}
		delete(bodies, m.ID)
	}
	b := testBody(1024, 99)
	enqueueT(t, s2, testMessage("after", t0, "a@example.com"), b)
	bodies["after"] = b
	checkStored(t, s2, bodies)
	s2.Close()
}

// checkStored checks that s holds exactly the messages of bodies, each with
// its body intact.
func checkStored(t *testing.T, s *Store, bodies map[string][]byte) {
	t.Helper()
	l := listT(t, s)
	if len(l) != len(bodies) {
		t.Errorf("store has %d messages, %d were reported stored", len(l), len(bodies))
	}
	for _, m := range l {
		want, ok := bodies[m.ID]
		if !ok {
			t.Errorf("store has %s, whose Enqueue failed", m.ID)
			continue
		}
		if got := bodyT(t, s, m.ID); !bytes.Equal(got, want) {
			t.Errorf("body of %s: %d bytes, want %d", m.ID, len(got), len(want))
		}
	}
}
