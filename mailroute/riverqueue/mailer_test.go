package riverqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// killable is an instance's store that can die: after kill, every call
// fails, as for a process whose connections are gone.
type killable struct {
	mailroute.QueueStore
	dead atomic.Bool
}

var errDead = errors.New("instance killed")

func (k *killable) Lease(ctx context.Context, req mailroute.LeaseRequest) ([]*mailroute.QueuedMessage, error) {
	if k.dead.Load() {
		return nil, errDead
	}
	return k.QueueStore.Lease(ctx, req)
}

func (k *killable) Update(ctx context.Context, m *mailroute.QueuedMessage) error {
	if k.dead.Load() {
		return errDead
	}
	return k.QueueStore.Update(ctx, m)
}

func (k *killable) Release(ctx context.Context, id, token string) error {
	if k.dead.Load() {
		return errDead
	}
	return k.QueueStore.Release(ctx, id, token)
}

func (k *killable) Quarantine(ctx context.Context, id, token string, reason error) error {
	if k.dead.Load() {
		return errDead
	}
	return k.QueueStore.Quarantine(ctx, id, token, reason)
}

// instance is one application replica: a Mailer on its own Store.
type instance struct {
	name      string
	m         *mailroute.Mailer
	store     *killable
	delivered atomic.Int64 // EventDelivered seen by this instance
}

func newInstance(t *testing.T, name string, pool *pgxpool.Pool, dnsAddr string, port int, lease time.Duration) *instance {
	t.Helper()
	in := &instance{name: name, store: &killable{QueueStore: &riverqueue.Store{Pool: pool, LeaseTimeout: lease, ClientID: name}}}
	m, err := mailroute.New(mailroute.Config{
		Hostname: name,
		Resolver: mailroute.DNSServer(dnsAddr),
		Direct:   mailroute.DirectOptions{Port: port, TLS: mailroute.NoTLS},
		Queue:    in.store,
		Retry:    mailroute.RetryPolicy{FirstRetry: 200 * time.Millisecond, MaxInterval: time.Second, Jitter: -1},
		OnEvent: func(ev mailroute.Event) {
			if ev.Kind == mailroute.EventDelivered {
				in.delivered.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	in.m = m
	t.Cleanup(func() { m.Close() })
	return in
}

// Two Mailers on one database, 300 messages, an MX that defers the first
// attempt of every third recipient. Instance a is killed mid-delivery (its
// store dies, its context is cancelled while a session of it is stalled at
// the end of DATA); b finishes a's work once a's leases run out. Every
// recipient is delivered exactly once.
func TestTwoInstancesShareTheQueue(t *testing.T) {
	const (
		n       = 300
		lease   = 3 * time.Second
		stallAt = 30
	)
	pool := newDB(t)
	if err := (&riverqueue.Store{Pool: pool}).Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		tries   = map[string]int{}
		dataA   atomic.Int64 // DATA commands of a so far
		stalled = make(chan struct{}, 100)
		unstall = make(chan struct{})
	)
	sink := smtptest.Start(t, smtptest.Options{
		RcptPolicy: func(rcpt string) *smtp.SMTPError {
			mu.Lock()
			defer mu.Unlock()
			tries[rcpt]++
			var i int
			fmt.Sscanf(rcpt, "u%d@", &i)
			if i%3 == 0 && tries[rcpt] == 1 {
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Greylisted, try again later"}
			}
			return nil
		},
		DataPolicy: func(m *smtptest.Message) *smtp.SMTPError {
			// a's stallAt-th DATA and every one after it stall: a
			// is killed in the middle of its share of the work, however
			// the two instances' leases happened to split the queue (a
			// wait for a third of all mail could find a with nothing
			// leased any more).
			if m.Helo == "a.test" && dataA.Add(1) >= stallAt {
				stalled <- struct{}{}
				<-unstall // until a is dead; then refuse
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "too late"}
			}
			return nil
		},
	})
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	dns.MX("dest.test", "mx.dest.test").Host("mx.dest.test", "127.0.0.1")

	a := newInstance(t, "a.test", pool, dns.Addr, sink.Port(), lease)
	b := newInstance(t, "b.test", pool, dns.Addr, sink.Port(), lease)

	// Enqueue, half through each instance, four callers at once.
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := range 4 {
		in := a
		if g%2 == 1 {
			in = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				body := fmt.Sprintf("From: app@sender.test\r\nTo: u%d@dest.test\r\nSubject: msg-%d\r\n\r\nhello %d\r\n", i, i, i)
				if _, err := in.m.Enqueue(ctx, "app@sender.test", []string{fmt.Sprintf("u%d@dest.test", i)}, strings.NewReader(body)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	enqueued := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatalf("Enqueue: %v", err)
	}

	accepted := func() map[string][]string { // rcpt → EHLO names of the deliveries
		out := map[string][]string{}
		for _, m := range sink.Messages() {
			for _, r := range m.Rcpts {
				out[r] = append(out[r], m.Helo)
			}
		}
		return out
	}
	byA := func() int64 {
		k := int64(0)
		for _, m := range sink.Messages() {
			if m.Helo == "a.test" {
				k += int64(len(m.Rcpts))
			}
		}
		return k
	}
	waitFor := func(what string, d time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (%d delivered)", what, len(accepted()))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Kill a mid-delivery, at its stallAt-th message.
	select {
	case <-stalled:
	case <-time.After(60 * time.Second):
		t.Fatalf("a never reached the end of DATA %d times (%d)", stallAt, dataA.Load())
	}
	// Everything the sink accepted from a is recorded in the queue (its
	// delivered event comes after its Update), so the kill loses no
	// outcome: a duplicate could then only come from a lease given twice.
	waitFor("a's outcomes to be recorded", 20*time.Second, func() bool { return a.delivered.Load() == byA() })
	a.store.dead.Store(true)
	killAt := time.Now()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.m.Shutdown(cancelled); err == nil {
		t.Log("a had nothing in flight at the kill")
	}
	close(unstall)
	beforeKill := len(accepted())
	t.Logf("a killed with %d of %d delivered (a %d)", beforeKill, n, byA())

	waitFor("every recipient", 90*time.Second, func() bool { return len(accepted()) == n })
	took := time.Since(start)
	got := accepted()
	var dup []string
	for r, hs := range got {
		if len(hs) != 1 {
			dup = append(dup, fmt.Sprintf("%s by %v", r, hs))
		}
	}
	if len(dup) > 0 {
		t.Errorf("%d recipients delivered more than once: %v", len(dup), dup)
	}
	for i := range n {
		if _, ok := got[fmt.Sprintf("u%d@dest.test", i)]; !ok {
			t.Errorf("u%d@dest.test never delivered", i)
		}
	}
	waitFor("b to empty the queue", 30*time.Second, func() bool {
		l, err := b.m.QueueList(ctx)
		return err == nil && len(l) == 0
	})
	nA := byA()
	t.Logf("%d messages: enqueued in %v (%.0f msg/s, 4 callers on 2 instances); all delivered once in %v (%.0f msg/s with 2 instances, a third deferred once, one instance killed and its leases of %v waited out at %v); a delivered %d, b %d",
		n, enqueued.Round(time.Millisecond), float64(n)/enqueued.Seconds(), took.Round(time.Millisecond),
		float64(n)/took.Seconds(), lease, killAt.Sub(start).Round(time.Millisecond), nA, int64(n)-nA)
	if nA == 0 || int64(n)-nA == 0 {
		t.Errorf("one instance did all the work: a %d, b %d", nA, int64(n)-nA)
	}
}

// The outbox: a message enqueued in the application's transaction is sent
// when it commits and never when it rolls back, whether it goes through the
// Mailer (riverqueue.WithTx) or straight to the Store (EnqueueTx).
func TestTransactionalEnqueue(t *testing.T) {
	s, pool := newStore(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE account (email text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	sink := smtptest.Start(t, smtptest.Options{})
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	dns.MX("dest.test", "mx.dest.test").Host("mx.dest.test", "127.0.0.1")
	m, err := mailroute.New(mailroute.Config{
		Hostname: "app.test",
		Resolver: mailroute.DNSServer(dns.Addr),
		Direct:   mailroute.DirectOptions{Port: sink.Port(), TLS: mailroute.NoTLS},
		Queue:    s,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	signup := func(email string, viaMailer, commit bool) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `INSERT INTO account (email) VALUES ($1)`, email); err != nil {
			t.Fatal(err)
		}
		body := "From: app@sender.test\r\nTo: " + email + "\r\nSubject: Welcome\r\n\r\nWelcome!\r\n"
		var id string
		if viaMailer {
			id, err = m.Enqueue(riverqueue.WithTx(ctx, tx), "app@sender.test", []string{email}, strings.NewReader(body))
		} else {
			id, err = s.EnqueueTx(ctx, tx, "app@sender.test", []string{email}, strings.NewReader(body))
		}
		if err != nil || id == "" {
			t.Fatalf("enqueue in the transaction: %q %v", id, err)
		}
		if commit {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	signup("rolledback1@dest.test", true, false)
	signup("rolledback2@dest.test", false, false)
	signup("committed1@dest.test", true, true)
	signup("committed2@dest.test", false, true)

	msgs := sink.WaitMessages(t, 2, 20*time.Second)
	time.Sleep(2500 * time.Millisecond) // two more polls of the worker: nothing else comes
	msgs = sink.Messages()
	var got []string
	for _, msg := range msgs {
		got = append(got, msg.Rcpts...)
	}
	if len(got) != 2 || !containsAll(got, "committed1@dest.test", "committed2@dest.test") {
		t.Fatalf("delivered %v, want exactly the two committed sign-ups", got)
	}
	var accounts int
	pool.QueryRow(ctx, `SELECT count(*) FROM account`).Scan(&accounts)
	if accounts != 2 {
		t.Errorf("%d accounts, want 2", accounts)
	}
	var jobs int
	pool.QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&jobs)
	if jobs != 0 {
		t.Errorf("%d River jobs left", jobs)
	}

	// EnqueueTx checks the envelope as Send does.
	tx, _ := pool.Begin(ctx)
	defer tx.Rollback(ctx)
	if _, err := s.EnqueueTx(ctx, tx, "a@b> SIZE=1", []string{"x@dest.test"}, strings.NewReader("x\r\n")); err == nil {
		t.Error("EnqueueTx accepted a malformed sender")
	}
	if _, err := s.EnqueueTx(ctx, tx, "a@sender.test", nil, strings.NewReader("x\r\n")); err == nil {
		t.Error("EnqueueTx accepted a message without recipients")
	}
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// The rates with two instances and nothing in the way: 300 messages
// enqueued by four callers, delivered by whichever instance leases them.
func TestTwoInstancesRates(t *testing.T) {
	const n = 300
	pool := newDB(t)
	if err := (&riverqueue.Store{Pool: pool}).Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	sink := smtptest.Start(t, smtptest.Options{})
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	dns.MX("dest.test", "mx.dest.test").Host("mx.dest.test", "127.0.0.1")
	a := newInstance(t, "a.test", pool, dns.Addr, sink.Port(), 0)
	b := newInstance(t, "b.test", pool, dns.Addr, sink.Port(), 0)
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range 4 {
		in := a
		if g%2 == 1 {
			in = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				body := fmt.Sprintf("Subject: msg-%d\r\n\r\nhello\r\n", i)
				if _, err := in.m.Enqueue(ctx, "app@sender.test", []string{fmt.Sprintf("u%d@dest.test", i)}, strings.NewReader(body)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	enqueued := time.Since(start)
	sink.WaitMessages(t, n, 60*time.Second)
	took := time.Since(start)
	if got := len(sink.Messages()); got != n {
		t.Errorf("%d deliveries for %d messages", got, n)
	}
	t.Logf("%d messages: enqueue %.0f msg/s (%v), delivered %.0f msg/s end to end (%v); a %d, b %d",
		n, float64(n)/enqueued.Seconds(), enqueued.Round(time.Millisecond), float64(n)/took.Seconds(),
		took.Round(time.Millisecond), a.delivered.Load(), b.delivered.Load())
}
