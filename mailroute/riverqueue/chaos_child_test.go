package riverqueue_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// Environment of a chaos child process, set by TestChaos.
const (
	envChaosChild  = "MAILROUTE_CHAOS_CHILD"  // the child's EHLO name: p<process>-i<incarnation>.chaos.test
	envChaosStore  = "MAILROUTE_CHAOS_STORE"  // "river:<schema>" or "spool:<dir>"
	envChaosDNS    = "MAILROUTE_CHAOS_DNS"    // the DNS server
	envChaosPort   = "MAILROUTE_CHAOS_PORT"   // the MX port
	envChaosLease  = "MAILROUTE_CHAOS_LEASE"  // River's LeaseTimeout
	envChaosTermMs = "MAILROUTE_CHAOS_TERMMS" // how long SIGTERM's Shutdown waits, in ms
)

// TestChaosChild is one Mailer process of TestChaos. It works the queue
// until a signal: SIGUSR1 flushes (concurrently with the workers and with
// other flushes), SIGTERM shuts down with the patience envChaosTermMs
// gives (often too little: attempts in flight are cut), SIGINT shuts down
// with all the time it needs. SIGKILL needs no handler. Each outcome the
// Mailer reports goes to stdout as one line: "D rcpt" delivered (and
// saved), "N rcpt" not saved, "U rcpt" deferred after the data went out
// with no reply (the server may have taken it: a window for a duplicate,
// as when an attempt is cut short to stay within its lease), and
// "X kind rcpt err" for anything else final, which the driver treats as a
// failure.
func TestChaosChild(t *testing.T) {
	name := os.Getenv(envChaosChild)
	if name == "" {
		t.Skip("run by TestChaos")
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		out.Unlock()
	}
	store, closeStore := chaosStore(t, name)
	defer closeStore()
	port, _ := strconv.Atoi(os.Getenv(envChaosPort))
	m, err := mailroute.New(mailroute.Config{
		Hostname: name,
		Resolver: mailroute.DNSServer(os.Getenv(envChaosDNS)),
		Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Direct}},
		Direct:   mailroute.DirectOptions{Port: port, TLS: mailroute.NoTLS},
		Queue:    store,
		Retry:    mailroute.RetryPolicy{FirstRetry: 300 * time.Millisecond, MaxInterval: 2 * time.Second, FallbackAfter: -1},
		OnEvent: func(ev mailroute.Event) {
			switch ev.Kind {
			case mailroute.EventDelivered:
				say("D %s", ev.Rcpt)
			case mailroute.EventNotSaved:
				say("N %s", ev.Rcpt)
			case mailroute.EventDeferred, mailroute.EventQueued:
				if outcomeUnknown(ev.Err) {
					say("U %s", ev.Rcpt)
				}
			default:
				say("X %s %s %v", ev.Kind, ev.Rcpt, ev.Err)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	say("R %s", name) // ready: the driver may signal
	go func() {       // the queue's length, for the driver to see a spool store drain
		for {
			if l, err := m.QueueList(context.Background()); err == nil {
				n := 0
				for _, qm := range l {
					n += len(qm.Recipients)
				}
				say("L %d", n)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()

	run, stop := context.WithCancel(context.Background())
	defer stop()
	var flushes sync.WaitGroup
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	for s := range sig {
		if s == syscall.SIGUSR1 {
			flushes.Add(1)
			go func() {
				defer flushes.Done()
				m.Flush(run, "")
			}()
			continue
		}
		patience := time.Minute
		if s == syscall.SIGTERM {
			ms, _ := strconv.Atoi(os.Getenv(envChaosTermMs))
			patience = time.Duration(ms) * time.Millisecond
		}
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		go func() { <-ctx.Done(); stop() }() // a flush gets the workers' patience
		m.Shutdown(ctx)
		flushes.Wait() // a cancelled flush records what it knows, then returns
		stop()
		cancel()
		say("B %s", name)
		return
	}
}

func chaosStore(t *testing.T, name string) (mailroute.QueueStore, func()) {
	spec := os.Getenv(envChaosStore)
	switch {
	case len(spec) > 6 && spec[:6] == "spool:":
		sp := &spool.Store{Dir: spec[6:], NoSync: true} // a killed process keeps its page cache
		return sp, func() { sp.Close() }
	case len(spec) > 6 && spec[:6] == "river:":
		cfg, err := pgxpool.ParseConfig(os.Getenv("MAILROUTE_POSTGRES_URL"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = spec[6:]
		cfg.MaxConns = 6
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		lease, _ := time.ParseDuration(os.Getenv(envChaosLease))
		return &riverqueue.Store{Pool: pool, LeaseTimeout: lease, ClientID: name}, pool.Close
	}
	t.Fatalf("%s=%q", envChaosStore, spec)
	return nil, nil
}

// outcomeUnknown reports whether a deferral came after the message data
// went out and before any reply to it: the connection lost after the
// final dot, or the attempt ended (its lease budget, a shutdown) while the
// reply to the final dot or BDAT LAST was awaited.
func outcomeUnknown(err error) bool {
	if errors.Is(err, mailroute.ErrConnectionLost) {
		return true
	}
	var e *mailroute.Error
	return errors.As(err, &e) && e.Command == "." && e.Code == 0
}
