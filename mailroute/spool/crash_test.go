package spool_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
	"github.com/mailroute/go-mailroute/mailroute/spool"
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
	sink, err := mailtest.NewServer(mailtest.Options{Refuse: func(string) *mailtest.Reply {
		if rand.IntN(3) == 0 {
			refused.Add(1)
			return &mailtest.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Message: "try again"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
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

	seen := make(map[int]int)
	re := regexp.MustCompile(`Subject: msg-(\d+)\r\n`)
	for _, m := range sink.Messages() {
		if sub := re.FindSubmatch(m.Data); sub != nil {
			n, _ := strconv.Atoi(string(sub[1]))
			seen[n]++
		}
	}
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
	dir := os.Getenv("CRASH_DIR")
	port, _ := strconv.Atoi(os.Getenv("CRASH_PORT"))
	store := &spool.Store{Dir: filepath.Join(dir, "spool")}
	defer store.Close()
	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.sender.test",
		Resolver: &mailtest.Resolver{
			MX:    map[string][]string{"sink.test": {"mx.sink.test"}},
			Hosts: map[string][]string{"mx.sink.test": {"127.0.0.1"}},
		},
		Router: mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}},
		Direct: mailroute.DirectOptions{Port: port},
		Queue:  store,
		Retry:  mailroute.RetryPolicy{FirstRetry: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Jitter: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	progress := filepath.Join(dir, "acked")
	acked := make(map[int]bool)
	if f, err := os.Open(progress); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if n, err := strconv.Atoi(sc.Text()); err == nil {
				acked[n] = true
			}
		}
		f.Close()
	}
	log, err := os.OpenFile(progress, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	for n := range crashMessages {
		if acked[n] {
			continue
		}
		body := fmt.Sprintf("From: a@sender.test\r\nTo: u%d@sink.test\r\nSubject: msg-%d\r\n\r\nmessage %d\r\n", n, n, n)
		if _, err := m.Enqueue(context.Background(), "a@sender.test", []string{fmt.Sprintf("u%d@sink.test", n)}, strings.NewReader(body)); err != nil {
			t.Fatalf("enqueue %d: %v", n, err)
		}
		fmt.Fprintf(log, "%d\n", n) // acknowledged: the application may forget it
		log.Sync()
	}
	for {
		list, err := m.QueueList(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
