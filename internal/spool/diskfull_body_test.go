//go:build linux

package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// TestDiskFullJournalBodies fills a real, small file system (a 256 KiB
// tmpfs, which needs root) with messages whose bodies and states are only
// in the journal, until Enqueue fails with ENOSPC, then uses up every page
// left outside the spool. On that full disk:
//
//   - the failed Enqueue committed nothing: the journal did not grow and
//     no file was written;
//   - deleting a journal-only message is a tombstone only, and gives its
//     share of the reserve back at once; the journal's appends get the
//     blocks that frees when the disk has no other: after three
//     deliveries an Enqueue fits again;
//   - a checkpoint succeeds, writing every body file and state file into
//     the room the reserve held, and drops the generation;
//   - every body is intact, before and after a reopen.
func TestDiskFullJournalBodies(t *testing.T) {
	dir := smallTmpfs(t, "the reserve steps of the fault tables still run")
	ctx := context.Background()
	spool := dir + "/spool"
	writes := 0
	s := openT(t, spool, Options{Fault: func(op Op, path string) error {
		if op == OpWrite || op == OpCreate {
			writes++
		}
		return nil
	}})
	bodies := map[string][]byte{}
	var err error
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("m%04d", i)
		b := testBody(3000+i*53%1000, uint64(i)) // one page of body, one of state
		before, files := journalSize(t, spool), writes
		if err = s.Enqueue(ctx, testMessage(id, t0, "a@example.com"), bytes.NewReader(b)); err != nil {
			if after := journalSize(t, spool); after != before || writes != files {
				t.Errorf("the failed Enqueue left %d octets in the journal and wrote %d files", after-before, writes-files)
			}
			break
		}
		bodies[id] = b
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Enqueue on a full disk = %v, want an error wrapping ENOSPC", err)
	}
	if q := files(t, spool, queueSub); len(q) != 0 {
		t.Fatalf("queue/ = %v before a checkpoint", q)
	}
	t.Logf("%d messages fit before ENOSPC: %v", len(bodies), err)

	fillUp(t, dir)

	// Deliveries on the full disk: a tombstone each, nothing else, and
	// their reserve back; then a message of the same size fits.
	for _, id := range []string{"m0000", "m0001", "m0002"} {
		need, w := s.res.need, writes
		if err := s.Update(ctx, &Message{ID: id}); err != nil {
			t.Fatalf("delete on a full disk: %v", err)
		}
		if got, want := need-s.res.need, int64(2*stateBlock); got != want || writes != w {
			t.Errorf("the delete gave back %d octets of reserve and wrote %d files, want %d (a page of body, one of state) and none",
				got, writes-w, want)
		}
		delete(bodies, id)
	}
	again := testBody(3000, 1000)
	enqueueT(t, s, testMessage("again", t0, "a@example.com"), again)
	bodies["again"] = again

	// The checkpoint on the full disk writes every file into the reserve's
	// room and drops the generation.
	if err := checkpointNow(s); err != nil {
		t.Fatalf("checkpoint on a full disk: %v", err)
	}
	q := files(t, spool, queueSub)
	if countExt(q, extBody) != len(bodies) || countExt(q, extState) != len(bodies) {
		t.Errorf("queue/ has %d bodies and %d states for %d messages", countExt(q, extBody), countExt(q, extState), len(bodies))
	}
	if j := files(t, spool, journalSub); len(j) != 1 {
		t.Errorf("journal/ = %v after the checkpoint, want only the new generation", j)
	}
	checkStored(t, s, bodies)
	s.Close()
	checkStored(t, openT(t, spool, Options{}), bodies)
}
