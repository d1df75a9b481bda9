package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// killSegmentMax makes the killed process checkpoint every few dozen
// messages, so kills land in appends, in checkpoints and between them.
const killSegmentMax = 32 << 10

func killBody(id string) []byte {
	h := fnv.New64a()
	h.Write([]byte(id))
	return testBody(1500+int(h.Sum64()%1500), h.Sum64())
}

func killUpdated(id string) *Message {
	m := testMessage(id, t0, "a@example.com", "b@example.com")
	m.Recipients = m.Recipients[1:]
	m.Recipients[0].Attempts = 1
	return clone(m)
}

// TestJournalKill runs a real process that enqueues, updates and deletes
// messages through a store that checkpoints every few dozen messages,
// kills it with SIGKILL at random moments, and after each kill opens the
// store and checks it against what the process had acknowledged: every
// acknowledged operation survived exactly (states and bodies), nothing
// deleted came back, and only the one operation in flight may or may not
// have taken effect. Nothing may be quarantined.
func TestJournalKill(t *testing.T) {
	if os.Getenv("SPOOL_KILL_CHILD") != "" {
		t.Skip("in the child")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	base := &model{msgs: map[string]*Message{}, bodies: map[string][]byte{}}
	for run := range 6 {
		acks := filepath.Join(dir, fmt.Sprintf("acks-%d", run))
		cmd := exec.Command(os.Args[0], "-test.run=^TestJournalKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "SPOOL_KILL_CHILD=1", "KILL_DIR="+spool, "KILL_ACKS="+acks, "KILL_RUN="+strconv.Itoa(run))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(300+rand.IntN(500)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("child ended before the kill: %v\n%s", err, out.String())
		}

		var n, queued int
		base, n, queued = checkAfterKill(t, spool, base, acks, run)
		t.Logf("run %d: %d operations acknowledged before the kill, %d messages queued", run, n, queued)
	}
}

// TestJournalKillLazyState kills the child at the moments the lazy state
// and body files add, asked for by the child itself: after many
// operations with no checkpoint at all (every state and body only in the
// journal, no file), in the middle of a checkpoint's state writes, and in
// the middle of its body writes (some bodies and states written, some
// not, the generation not dropped yet), while the writers go on. After
// each kill the store must hold exactly what was acknowledged.
func TestJournalKillLazyState(t *testing.T) {
	if os.Getenv("SPOOL_KILL_CHILD") != "" {
		t.Skip("in the child")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	for _, at := range []string{"unwritten", "states", "bodies"} {
		t.Run(at, func(t *testing.T) {
			dir := t.TempDir()
			spool := filepath.Join(dir, "spool")
			base := &model{msgs: map[string]*Message{}, bodies: map[string][]byte{}}
			for run := range 4 {
				after := 50 + rand.IntN(300) // operations
				if at != "unwritten" {
					after = 2 + rand.IntN(8) // files into the checkpoint
				}
				acks := filepath.Join(dir, fmt.Sprintf("acks-%d", run))
				cmd := exec.Command(os.Args[0], "-test.run=^TestJournalKillChild$", "-test.count=1")
				cmd.Env = append(os.Environ(), "SPOOL_KILL_CHILD=1", "KILL_DIR="+spool, "KILL_ACKS="+acks,
					"KILL_RUN="+strconv.Itoa(run), "KILL_AT="+at, "KILL_AFTER="+strconv.Itoa(after))
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(30 * time.Second)
				for {
					b, _ := os.ReadFile(acks)
					if bytes.Contains(b, []byte("K - -\n")) {
						break
					}
					if time.Now().After(deadline) {
						cmd.Process.Kill()
						cmd.Wait()
						t.Fatalf("run %d: the child never asked for the kill\n%s", run, out.String())
					}
					time.Sleep(time.Millisecond)
				}
				cmd.Process.Signal(syscall.SIGKILL)
				if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
					t.Fatalf("child ended before the kill: %v\n%s", err, out.String())
				}
				q := files(t, spool, queueSub)
				// This run's messages (earlier runs' were checkpointed by
				// the Close after their check).
				mine := slices.DeleteFunc(slices.Clone(q), func(name string) bool {
					return !strings.HasPrefix(name, fmt.Sprintf("r%d-", run))
				})
				states, bodies := countExt(mine, extState), countExt(mine, extBody)
				if at == "unwritten" && len(mine) != 0 {
					t.Fatalf("run %d: queue/ holds %d files of this run without a checkpoint", run, len(mine))
				}
				if at != "unwritten" && len(files(t, spool, journalSub)) < 2 {
					t.Fatalf("run %d: killed in a checkpoint, but journal/ = %v", run, files(t, spool, journalSub))
				}

				var n, queued int
				base, n, queued = checkAfterKill(t, spool, base, acks, run)
				t.Logf("run %d: %d operations acknowledged before the kill, %d messages queued, %d state and %d body files were on disk",
					run, n, queued, states, bodies)
			}
		})
	}
}

// checkAfterKill opens the spool a killed child left and checks that it
// holds exactly what the child had acknowledged on top of base (or that
// and the one operation in flight at the kill), with nothing quarantined;
// it returns the model the next run builds on, how many operations were
// acknowledged and how many messages are queued.
func checkAfterKill(t *testing.T, spool string, base *model, acks string, run int) (next *model, n, queued int) {
	t.Helper()
	acked, ifApplied, n := replayAcks(t, base, acks)
	s := openT(t, spool, Options{})
	err := acked.holds(t, s)
	switch {
	case err == nil:
		next = acked
	case ifApplied != nil && ifApplied.holds(t, s) == nil:
		next = ifApplied
	default:
		t.Fatalf("run %d, %d operations acknowledged: %v", run, n, err)
	}
	if c := files(t, spool, corruptSub); len(c) != 0 {
		t.Fatalf("run %d: corrupt/ = %v", run, c)
	}
	queued = len(listT(t, s))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return next, n, queued
}

// replayAcks applies a child's acknowledgements to a copy of base, and
// returns also the model with its operation in flight applied.
func replayAcks(t *testing.T, base *model, path string) (acked, ifApplied *model, n int) {
	t.Helper()
	acked = &model{msgs: map[string]*Message{}, bodies: map[string][]byte{}}
	for k, v := range base.msgs {
		acked.msgs[k] = v
	}
	for k, v := range base.bodies {
		acked.bodies[k] = v
	}
	apply := func(md *model, op, id string) {
		switch op {
		case "E":
			md.msgs[id], md.bodies[id] = clone(testMessage(id, t0, "a@example.com", "b@example.com")), killBody(id)
		case "U":
			md.msgs[id] = killUpdated(id)
		case "D":
			md.msgs[id] = nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var inflight []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) != 3 {
			continue // a line cut by the kill
		}
		switch w[0] {
		case "B":
			inflight = w[1:]
		case "A":
			apply(acked, w[1], w[2])
			inflight = nil
			n++
		}
	}
	if inflight != nil {
		ifApplied = &model{msgs: map[string]*Message{}, bodies: acked.bodies}
		for k, v := range acked.msgs {
			ifApplied.msgs[k] = v
		}
		apply(ifApplied, inflight[0], inflight[1])
	}
	return acked, ifApplied, n
}

// TestJournalKillChild is the process TestJournalKill kills: it goes on
// enqueueing, updating and deleting until then, writing a line before
// each operation and one after each acknowledgement (no fsync: a killed
// process's writes stay in the page cache).
func TestJournalKillChild(t *testing.T) {
	if os.Getenv("SPOOL_KILL_CHILD") == "" {
		t.Skip("run by TestJournalKill")
	}
	ctx := context.Background()
	acks, err := os.OpenFile(os.Getenv("KILL_ACKS"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // the checkpoint's goroutine writes the kill line
	line := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(acks, format, args...)
	}
	// With KILL_AT, the child asks for the kill at a chosen moment by
	// writing a "K" line (see TestJournalKillLazyState).
	opts := Options{segmentMax: killSegmentMax}
	killAfter, _ := strconv.Atoi(os.Getenv("KILL_AFTER"))
	switch os.Getenv("KILL_AT") {
	case "unwritten": // no checkpoint: every state and body is only in the journal
		opts.segmentMax = 0
	case "states", "bodies": // in the middle of a checkpoint's state (body) writes
		var created atomic.Int64
		at, ext := int64(killAfter), extState
		if os.Getenv("KILL_AT") == "bodies" {
			ext = extBody
		}
		opts.Fault = func(op Op, path string) error {
			if op == OpCreate && filepath.Ext(path) == ext && created.Add(1) == at {
				line("K - -\n")
				time.Sleep(time.Minute) // the checkpoint stops here; the writers go on
			}
			return nil
		}
		killAfter = -1 // not by operations
	}
	s, err := Open(os.Getenv("KILL_DIR"), opts)
	if err != nil {
		t.Fatal(err)
	}
	run := os.Getenv("KILL_RUN")
	ops := 0
	do := func(op, id string, f func() error) {
		line("B %s %s\n", op, id)
		if err := f(); err != nil {
			t.Fatalf("%s %s: %v", op, id, err)
		}
		line("A %s %s\n", op, id)
		if ops++; ops == killAfter {
			line("K - -\n")
		}
	}
	for i := 0; ; i++ {
		id := fmt.Sprintf("r%s-%05d", run, i)
		m := testMessage(id, t0, "a@example.com", "b@example.com")
		do("E", id, func() error { return s.Enqueue(ctx, m, bytes.NewReader(killBody(id))) })
		if i%2 == 1 {
			prev := fmt.Sprintf("r%s-%05d", run, i-1)
			do("U", prev, func() error { return s.Update(ctx, killUpdated(prev)) })
		}
		if i%3 == 2 {
			old := fmt.Sprintf("r%s-%05d", run, i-2)
			do("D", old, func() error { return s.Update(ctx, &Message{ID: old}) })
		}
	}
}
