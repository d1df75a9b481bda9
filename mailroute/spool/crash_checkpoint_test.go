//go:build linux

package spool_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCrashInCheckpoint kills the Store's process in the middle of the
// checkpoint that writes the state files of queued messages, those whose
// state was until then only in the journal. The child enqueues messages,
// stops its Mailer, turns the state file name of one queued message into
// a FIFO (opening it for writing blocks until someone reads), and closes
// the Store: the checkpoint at Close writes the other states and stops at
// that one, so the kill lands inside the state writes every time. After
// four such kills a normal run must deliver every acknowledged message.
func TestCrashInCheckpoint(t *testing.T) {
	if os.Getenv("MAILROUTE_CRASH_CHILD") != "" {
		t.Skip("in the child")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	sink := newCrashSink(t, nil)
	dir := t.TempDir()
	const total = 200
	child := func(mode string, upTo int) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashCheckpointChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "MAILROUTE_CRASH_CHILD=1", "CRASH_DIR="+dir,
			"CRASH_PORT="+strconv.Itoa(sink.Port()), "CRASH_MODE="+mode, "CRASH_UPTO="+strconv.Itoa(upTo))
		return cmd
	}
	queue := filepath.Join(dir, "spool", "queue")
	for run := range 4 {
		marker := filepath.Join(dir, "closing")
		os.Remove(marker)
		cmd := child("checkpoint", (run+1)*total/4)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		var fifo string
		for fifo == "" {
			if b, err := os.ReadFile(marker); err == nil && strings.HasSuffix(string(b), "\n") {
				fifo = strings.TrimSpace(string(b))
			} else if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("run %d: the child never reached the checkpoint\n%s", run, out.String())
			}
			time.Sleep(time.Millisecond)
		}
		// Let the checkpoint write what it can before the FIFO.
		time.Sleep(200 * time.Millisecond)
		states := 0
		if ents, err := os.ReadDir(queue); err == nil {
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".json") && e.Type().IsRegular() {
					states++
				}
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("run %d: the child ended before the kill: %v\n%s", run, err, out.String())
		}
		journal, _ := os.ReadDir(filepath.Join(dir, "spool", "journal"))
		if len(journal) == 0 {
			t.Fatalf("run %d: killed inside the checkpoint, but no journal generation is left", run)
		}
		// The FIFO is this test's device, not a crash's debris.
		if err := os.Remove(fifo); err != nil {
			t.Fatal(err)
		}
		t.Logf("run %d: killed in the checkpoint's state writes with %d state files written, %d generations kept", run, states, len(journal))
	}
	out, err := runUntil(child("deliver", total), time.Now().Add(50*time.Second))
	if err != nil {
		t.Fatalf("final run: %v\n%s", err, out)
	}
	seen := deliveries(sink, "ckpt")
	for n := range total {
		if seen[n] == 0 {
			t.Errorf("message %d was acknowledged and never delivered", n)
		}
	}
}

// TestCrashCheckpointChild is TestCrashInCheckpoint's process: it
// enqueues the messages below CRASH_UPTO not yet acknowledged; then, in
// "checkpoint" mode, stops its Mailer, plants the FIFO and closes the
// Store (where it is killed); in "deliver" mode it waits for the queue to
// empty.
func TestCrashCheckpointChild(t *testing.T) {
	if os.Getenv("MAILROUTE_CRASH_CHILD") == "" || os.Getenv("CRASH_MODE") == "" {
		t.Skip("run by TestCrashInCheckpoint")
	}
	ctx := context.Background()
	dir := os.Getenv("CRASH_DIR")
	upTo, _ := strconv.Atoi(os.Getenv("CRASH_UPTO"))
	m, store := newCrashMailer(t)
	enqueueUnacked(t, m, "ckpt", upTo)
	if os.Getenv("CRASH_MODE") == "deliver" {
		waitQueueEmpty(t, m)
		m.Close()
		store.Close()
		return
	}
	m.Close() // no delivery from here on: what is queued stays queued
	list, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fifo := ""
	for _, qm := range list {
		p := filepath.Join(dir, "spool", "queue", qm.ID+".json")
		if _, err := os.Lstat(p); err == nil {
			continue // loaded by Open: its state is on disk already
		}
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		fifo = p
		break
	}
	if fifo == "" {
		t.Fatalf("no queued message without a state file among %d", len(list))
	}
	if err := os.WriteFile(filepath.Join(dir, "closing"), []byte(fifo+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store.Close() // its checkpoint blocks on the FIFO until the kill
	t.Fatal("Close returned: the checkpoint did not write the FIFO's state")
}
