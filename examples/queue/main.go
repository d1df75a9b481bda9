// Command queue shows mailroute's durable queue: a message deferred by a
// greylisting MX is kept in a spool directory, listed (the library's
// `postqueue -p`), and retried on demand (`postqueue -f`) until the MX takes
// it. Everything runs in-process on loopback.
//
//	go run ./examples/queue
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

func main() {
	// An MX that greylists: the first attempt of each recipient is
	// deferred, as many real ones do.
	mx, err := mailtest.NewServer(mailtest.Options{Hostname: "mx.smallisp.example", Greylist: true})
	if err != nil {
		log.Fatal(err)
	}
	defer mx.Close()
	dns := &mailtest.Resolver{
		MX:    map[string][]string{"smallisp.example": {"mx.smallisp.example"}},
		Hosts: map[string][]string{"mx.smallisp.example": {"127.0.0.1"}},
	}

	dir, err := os.MkdirTemp("", "mailroute-spool-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store := &spool.Store{Dir: dir}
	defer store.Close()

	m, err := mailroute.New(mailroute.Config{
		Hostname: "mail.example.net",
		Queue:    store, // what cannot be delivered now survives restarts here
		OnEvent: func(ev mailroute.Event) {
			fmt.Printf("  event: %-9v %s (attempt %d)\n", ev.Kind, ev.Rcpt, ev.Attempt)
		},
		Resolver: dns, // here only: the world is on loopback
		Direct:   mailroute.DirectOptions{Port: mx.Port()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()

	fmt.Println("Send:")
	res, err := m.Send(ctx, "ada@example.net", []string{"pal@smallisp.example"},
		strings.NewReader("From: ada@example.net\r\nSubject: your password reset\r\n\r\nThe link.\r\n"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("  %s: %v (%v)\n", res.Recipients[0].Rcpt, res.Recipients[0].Status, res.Recipients[0].Err)

	fmt.Println("\nQueue (postqueue -p):")
	list, err := m.QueueList(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, qm := range list {
		for _, r := range qm.Recipients {
			fmt.Printf("  %s  %s  attempts %d, next in %v\n    last error: %s\n",
				qm.ID, r.Rcpt, r.Attempts, time.Until(r.NextAttempt).Round(time.Minute), r.LastError)
		}
	}

	fmt.Println("\nFlush (postqueue -f):")
	if err := m.Flush(ctx, ""); err != nil {
		log.Fatal(err)
	}
	list, _ = m.QueueList(ctx)
	fmt.Printf("\n%d message(s) left in the queue; the MX received %d.\n", len(list), len(mx.Messages()))
}
