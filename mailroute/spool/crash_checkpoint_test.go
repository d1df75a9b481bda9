//go:build linux

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
	"syscall"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
	"github.com/mailroute/go-mailroute/mailroute/spool"
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
	sink, err := mailtest.NewServer(mailtest.Options{Refuse: func(string) *mailtest.Reply {
		if rand.IntN(3) == 0 {
			return &mailtest.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Message: "try again"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
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
	seen := make(map[int]bool)
	re := regexp.MustCompile(`Subject: ckpt-(\d+)\r\n`)
	for _, m := range sink.Messages() {
		if sub := re.FindSubmatch(m.Data); sub != nil {
			n, _ := strconv.Atoi(string(sub[1]))
			seen[n] = true
		}
	}
	for n := range total {
		if !seen[n] {
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
	port, _ := strconv.Atoi(os.Getenv("CRASH_PORT"))
	upTo, _ := strconv.Atoi(os.Getenv("CRASH_UPTO"))
	store := &spool.Store{Dir: filepath.Join(dir, "spool")}
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
	for n := range upTo {
		if acked[n] {
			continue
		}
		body := fmt.Sprintf("From: a@sender.test\r\nTo: c%d@sink.test\r\nSubject: ckpt-%d\r\n\r\nmessage %d\r\n", n, n, n)
		if _, err := m.Enqueue(ctx, "a@sender.test", []string{fmt.Sprintf("c%d@sink.test", n)}, strings.NewReader(body)); err != nil {
			t.Fatalf("enqueue %d: %v", n, err)
		}
		fmt.Fprintf(log, "%d\n", n)
		log.Sync()
	}
	if os.Getenv("CRASH_MODE") == "deliver" {
		for {
			list, err := m.QueueList(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) == 0 {
				m.Close()
				store.Close()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
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
