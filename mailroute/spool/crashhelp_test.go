package spool_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// What the SIGKILL tests (crash_test.go, crash_checkpoint_test.go) share:
// a sink that defers about a third of the attempts, the child's Mailer on
// a Store in CRASH_DIR, its progress file of acknowledged messages, and
// the count of deliveries per message at the end.

// newCrashSink starts a sink that refuses about one attempt in three with
// a 451, counting the refusals in refused when it is not nil.
func newCrashSink(t *testing.T, refused *atomic.Int64) *mailtest.Server {
	t.Helper()
	sink, err := mailtest.NewServer(mailtest.Options{Refuse: func(string) *mailtest.Reply {
		if rand.IntN(3) == 0 {
			if refused != nil {
				refused.Add(1)
			}
			return &mailtest.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Message: "try again"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	return sink
}

// newCrashMailer is a child's Mailer: direct delivery of sink.test to the
// sink on CRASH_PORT, quick retries, the queue in a Store under CRASH_DIR.
func newCrashMailer(t *testing.T) (*mailroute.Mailer, *spool.Store) {
	t.Helper()
	port, _ := strconv.Atoi(os.Getenv("CRASH_PORT"))
	store := &spool.Store{Dir: filepath.Join(os.Getenv("CRASH_DIR"), "spool")}
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
	return m, store
}

// enqueueUnacked enqueues, through m, message n for every n below upTo
// that the progress file in CRASH_DIR does not list yet, to
// <prefix><n>@sink.test with the subject "<prefix>-<n>", and appends n to
// the file once Enqueue has returned: from then on the message is the
// store's to keep, whenever the process is killed.
func enqueueUnacked(t *testing.T, m *mailroute.Mailer, prefix string, upTo int) {
	t.Helper()
	progress := filepath.Join(os.Getenv("CRASH_DIR"), "acked")
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
	for n := range upTo {
		if acked[n] {
			continue
		}
		rcpt := fmt.Sprintf("%s%d@sink.test", prefix, n)
		body := fmt.Sprintf("From: a@sender.test\r\nTo: %s\r\nSubject: %s-%d\r\n\r\nmessage %d\r\n", rcpt, prefix, n, n)
		if _, err := m.Enqueue(context.Background(), "a@sender.test", []string{rcpt}, strings.NewReader(body)); err != nil {
			t.Fatalf("enqueue %d: %v", n, err)
		}
		fmt.Fprintf(log, "%d\n", n) // acknowledged: the application may forget it
		log.Sync()
	}
}

// waitQueueEmpty returns once m's queue holds nothing.
func waitQueueEmpty(t *testing.T, m *mailroute.Mailer) {
	t.Helper()
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

// deliveries counts the sink's accepted copies of each message that
// enqueueUnacked sent with prefix.
func deliveries(sink *mailtest.Server, prefix string) map[int]int {
	seen := make(map[int]int)
	re := regexp.MustCompile(`Subject: ` + regexp.QuoteMeta(prefix) + `-(\d+)\r\n`)
	for _, m := range sink.Messages() {
		if sub := re.FindSubmatch(m.Data); sub != nil {
			n, _ := strconv.Atoi(string(sub[1]))
			seen[n]++
		}
	}
	return seen
}
