// Command multi-instance shows mailroute's shared queue in PostgreSQL
// (mailroute/riverqueue): two Mailers, as two replicas of a web application
// would hold them, share one queue. A loopback MX defers the first attempt
// of every recipient (greylisting); whichever instance leases a message
// retries it, and each message is delivered once. One sign-up is enqueued
// inside the application's own transaction and rolled back: it is never
// sent.
//
//	bash internal/peers/peers.sh start   # or any PostgreSQL you can create tables in
//	cd examples/multi-instance   # a module of its own: it requires mailroute/riverqueue
//	go run . -db "$(bash ../../internal/peers/postgres.sh url)"
//
// The database is given by -db or MAILROUTE_POSTGRES_URL. The example works
// in a schema of its own, dropped at the end.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

func main() {
	db := flag.String("db", os.Getenv("MAILROUTE_POSTGRES_URL"), "PostgreSQL URL (default $MAILROUTE_POSTGRES_URL)")
	n := flag.Int("n", 10, "messages to send")
	flag.Parse()
	if *db == "" {
		fmt.Fprintln(os.Stderr, "multi-instance: no database; pass -db postgres://… or set MAILROUTE_POSTGRES_URL\n"+
			"(bash internal/peers/peers.sh start; eval \"$(bash internal/peers/peers.sh env)\")")
		os.Exit(2)
	}
	ctx := context.Background()

	// A schema of our own, so that the example leaves the database as it
	// found it.
	schema := fmt.Sprintf("mailroute_example_%d", os.Getpid())
	admin, err := pgx.Connect(ctx, *db)
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		log.Fatal(err)
	}
	defer admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
	cfg, err := pgxpool.ParseConfig(*db)
	if err != nil {
		log.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	// Once per deployment (any replica may do it; it is idempotent):
	// River's migrations and the store's table.
	if err := (&riverqueue.Store{Pool: pool}).Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	// A greylisting MX on loopback, recording which instance delivered.
	mx, err := mailtest.NewServer(mailtest.Options{Hostname: "mx.customer.example", Greylist: true})
	if err != nil {
		log.Fatal(err)
	}
	defer mx.Close()
	dns := &mailtest.Resolver{
		MX:    map[string][]string{"customer.example": {"mx.customer.example"}},
		Hosts: map[string][]string{"mx.customer.example": {"127.0.0.1"}},
	}

	// Two instances: each its own Mailer and Store, one database.
	var (
		emu     sync.Mutex
		byRcpt  = map[string][]string{}
		pending sync.WaitGroup
	)
	newInstance := func(name string) *mailroute.Mailer {
		m, err := mailroute.New(mailroute.Config{
			Hostname: name,
			Resolver: dns,
			Direct:   mailroute.DirectOptions{Port: mx.Port(), TLS: mailroute.NoTLS},
			Queue:    &riverqueue.Store{Pool: pool, ClientID: name},
			// Seconds rather than the default minutes, for the demo.
			Retry: mailroute.RetryPolicy{FirstRetry: time.Second, Jitter: -1},
			OnEvent: func(ev mailroute.Event) {
				switch ev.Kind {
				case mailroute.EventDeferred:
					fmt.Printf("  %-16s deferred %-24s (attempt %d, %v)\n", name, ev.Rcpt, ev.Attempt, ev.Err)
				case mailroute.EventDelivered:
					fmt.Printf("  %-16s delivered %-23s (attempt %d, queue ID %s)\n", name, ev.Rcpt, ev.Attempt, ev.QueueID)
					emu.Lock()
					byRcpt[ev.Rcpt] = append(byRcpt[ev.Rcpt], name)
					emu.Unlock()
					pending.Done()
				}
			},
		})
		if err != nil {
			log.Fatal(err)
		}
		return m
	}
	a, b := newInstance("web-1.example"), newInstance("web-2.example")

	fmt.Printf("enqueueing %d messages, alternately through web-1 and web-2:\n", *n)
	for i := range *n {
		m := a
		if i%2 == 1 {
			m = b
		}
		rcpt := fmt.Sprintf("user%d@customer.example", i)
		body := fmt.Sprintf("From: app@example.net\r\nTo: %s\r\nSubject: Your order %d\r\n\r\nThanks!\r\n", rcpt, i)
		pending.Add(1)
		if _, err := m.Enqueue(ctx, "app@example.net", []string{rcpt}, strings.NewReader(body)); err != nil {
			log.Fatal(err)
		}
	}

	// The outbox: a sign-up whose transaction rolls back sends nothing.
	if _, err := pool.Exec(ctx, `CREATE TABLE account (email text PRIMARY KEY)`); err != nil {
		log.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	tx.Exec(ctx, `INSERT INTO account VALUES ('late@customer.example')`)
	if _, err := a.Enqueue(riverqueue.WithTx(ctx, tx), "app@example.net", []string{"late@customer.example"},
		strings.NewReader("Subject: Welcome\r\n\r\nWelcome!\r\n")); err != nil {
		log.Fatal(err)
	}
	tx.Rollback(ctx)
	fmt.Println("a welcome mail enqueued in a transaction that rolled back: never sent")

	done := make(chan struct{})
	go func() { pending.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		log.Fatal("not everything was delivered within a minute")
	}
	a.Close()
	b.Close()

	fmt.Println("\nwho delivered what:")
	rcpts := make([]string, 0, len(byRcpt))
	for r := range byRcpt {
		rcpts = append(rcpts, r)
	}
	sort.Strings(rcpts)
	count := map[string]int{}
	for _, r := range rcpts {
		fmt.Printf("  %-26s %d time(s), by %s\n", r, len(byRcpt[r]), strings.Join(byRcpt[r], ", "))
		count[byRcpt[r][0]]++
		if len(byRcpt[r]) != 1 {
			log.Fatalf("%s was delivered %d times", r, len(byRcpt[r]))
		}
	}
	fmt.Printf("%d messages, each delivered once: web-1 %d, web-2 %d; the MX accepted %d\n",
		len(rcpts), count["web-1.example"], count["web-2.example"], len(mx.Messages()))
}
