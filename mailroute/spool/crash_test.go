package spool_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const crashMessages = 500

// TestCrashRecovery runs a real subprocess that enqueues 500 messages
// into a Store and lets its Mailer deliver them to a loopback sink
// deferring about a third of the attempts, kills it with SIGKILL at random
// moments ten times, restarts it each time, and checks that in the end
// every acknowledged message reached the sink at least once.
func TestCrashRecovery(t *testing.T) {
	if os.Getenv("MAILROUTE_CRASH_CHILD") != "" {
		t.Skip("in the child")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	var refused atomic.Int64
	sink := newCrashSink(t, &refused)
	dir := t.TempDir()

	child := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			"MAILROUTE_CRASH_CHILD=1", "CRASH_DIR="+dir, "CRASH_PORT="+strconv.Itoa(sink.Port()))
		return cmd
	}
	deadline := time.Now().Add(50 * time.Second)
	for i := range 10 {
		cmd := child()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(100+rand.IntN(500)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		t.Logf("kill %d: %d accepted at the sink so far", i+1, len(sink.Messages()))
	}
	cmd := child()
	out, err := runUntil(cmd, deadline)
	if err != nil {
		t.Fatalf("final run: %v\n%s", err, out)
	}

	seen := deliveries(sink, "msg")
	missing, dups := 0, 0
	for n := range crashMessages {
		switch c := seen[n]; {
		case c == 0:
			missing++
		case c > 1:
			dups += c - 1
		}
	}
	t.Logf("%d messages, %d delivered at least once, %d duplicates, %d attempts refused by the sink",
		crashMessages, len(seen), dups, refused.Load())
	if missing != 0 {
		t.Fatalf("%d messages lost", missing)
	}
}

func runUntil(cmd *exec.Cmd, deadline time.Time) ([]byte, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return []byte(out.String()), err
	case <-time.After(time.Until(deadline)):
		cmd.Process.Kill()
		<-done
		return []byte(out.String()), fmt.Errorf("did not finish in time")
	}
}

// TestCrashChild is the subprocess: it enqueues every message not yet
// acknowledged (its progress file says which), then waits until the queue
// is empty. It is killed at random moments. Its Mailer's workers poll the
// queue at their own pace (a second): only the public API is used here.
func TestCrashChild(t *testing.T) {
	if os.Getenv("MAILROUTE_CRASH_CHILD") == "" {
		t.Skip("run by TestCrashRecovery")
	}
	m, store := newCrashMailer(t)
	defer store.Close()
	defer m.Close()
	enqueueUnacked(t, m, "msg", crashMessages)
	waitQueueEmpty(t, m)
}
