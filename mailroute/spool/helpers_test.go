package spool_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
)

const testBody = "From: a@sender.test\r\nTo: b@dest.test\r\nSubject: hi\r\n\r\nHello.\r\n"

// world is an MX for dest.test on loopback, found through a static
// resolver, and a Mailer that sends everything direct to it through the
// public API only, as a user of the store would.
type world struct {
	mx     *mailtest.Server
	events *eventLog
}

func newWorld(t *testing.T, opts mailtest.Options) *world {
	t.Helper()
	mx, err := mailtest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mx.Close)
	return &world{mx: mx, events: &eventLog{}}
}

// mailer starts a Mailer on store; cfg's Queue, routing and DNS are set.
func (w *world) mailer(t *testing.T, store mailroute.QueueStore, cfg mailroute.Config) *mailroute.Mailer {
	t.Helper()
	cfg.Hostname = "mail.sender.test"
	cfg.Router = mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}}
	cfg.Resolver = &mailtest.Resolver{
		MX:    map[string][]string{"dest.test": {"mx.dest.test"}},
		Hosts: map[string][]string{"mx.dest.test": {"127.0.0.1"}},
	}
	cfg.Direct.Port = w.mx.Port()
	cfg.Queue = store
	cfg.OnEvent = w.events.add
	m, err := mailroute.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// eventLog records Config.OnEvent calls.
type eventLog struct {
	mu     sync.Mutex
	events []mailroute.Event
}

func (l *eventLog) add(e mailroute.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) all() []mailroute.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]mailroute.Event(nil), l.events...)
}

// wait waits until at least n events were reported.
func (l *eventLog) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		k := len(l.all())
		if k >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events in 20 s, want %d", k, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func flush(t *testing.T, m *mailroute.Mailer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Flush(ctx, ""); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}
