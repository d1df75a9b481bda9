package riverqueue_test

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// BenchmarkDrainInterleaved: the drain and its ceiling in alternating
// blocks of one run, so that the load of the shared machine, which moves
// every figure by half within a minute, falls on all of them alike. Each
// block of 2,000 messages is drained by two instances ("two": two Mailers
// with the default Concurrency, each on its own pool of 40 connections and
// its own Store, as two processes), drained by one ("one"), and sent by
// Mailer.Send from 8 callers ("send", no queue), to the same sink, in an
// order that rotates from block to block. A drain's block is queued
// (EnqueueBatch) before its Mailers start, untimed, and is timed from
// their start to the last delivery; each Mailer is closed after its
// block, and the next block's Mailers use the same pools (their
// connections are made once). b.N is rounded up to whole blocks.
// send-ratio is two/send; commits/msg counts the writing transactions of
// the "two" blocks (see commitCounter).
func BenchmarkDrainInterleaved(b *testing.B) {
	const block = 2000
	s, pool := newStore(b)
	sink, dns := benchMX(b, smtptest.Options{})
	ctx := context.Background()
	sender, err := mailroute.New(mailroute.Config{
		Hostname: "send.test",
		Resolver: mailroute.DNSServer(dns.Addr),
		Direct:   mailroute.DirectOptions{Port: sink.Port(), TLS: mailroute.NoTLS},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sender.Close()

	commits := &commitCounter{}
	pools := []*pgxpool.Pool{samePool(b, pool, 40, commits), samePool(b, pool, 40, commits)}
	var twoCommits int64
	drain := func(instances int, prefix string) time.Duration {
		enqueueBatches(b, s, block, block, prefix)
		var done atomic.Int64
		all := make(chan struct{})
		var ms []*mailroute.Mailer
		before := commits.n.Load()
		start := time.Now()
		for k, p := range pools[:instances] {
			m, err := mailroute.New(mailroute.Config{
				Hostname: fmt.Sprintf("i%d.test", k),
				Resolver: mailroute.DNSServer(dns.Addr),
				Direct:   mailroute.DirectOptions{Port: sink.Port(), TLS: mailroute.NoTLS},
				Queue:    &riverqueue.Store{Pool: p},
				OnEvent: func(ev mailroute.Event) {
					if ev.Kind == mailroute.EventDelivered && done.Add(1) == block {
						close(all)
					}
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			ms = append(ms, m)
		}
		select {
		case <-all:
		case <-time.After(5 * time.Minute):
			b.Fatalf("%s: %d of %d delivered", prefix, done.Load(), block)
		}
		d := time.Since(start)
		if instances == 2 {
			twoCommits += commits.n.Load() - before
		}
		for _, m := range ms {
			m.Close()
		}
		return d
	}
	send := func(prefix string) time.Duration {
		start := time.Now()
		each(b, block, 8, func(i int64) error {
			_, err := sender.Send(ctx, "app@sender.test", []string{fmt.Sprintf("%s%d@dest.test", prefix, i)}, bytes.NewReader(benchBody))
			return err
		})
		return time.Since(start)
	}

	blocks := (b.N + block - 1) / block
	var two, one, sent time.Duration
	b.ResetTimer()
	for i := range blocks {
		for k := range 3 {
			switch (i + k) % 3 {
			case 0:
				two += drain(2, fmt.Sprintf("two%d-", i))
			case 1:
				one += drain(1, fmt.Sprintf("one%d-", i))
			case 2:
				sent += send(fmt.Sprintf("send%d-", i))
			}
		}
	}
	b.StopTimer()
	n := float64(blocks * block)
	b.ReportMetric(n/two.Seconds(), "two-msgs/s")
	b.ReportMetric(n/one.Seconds(), "one-msgs/s")
	b.ReportMetric(n/sent.Seconds(), "send-msgs/s")
	b.ReportMetric(sent.Seconds()/two.Seconds(), "send-ratio")
	b.ReportMetric(float64(twoCommits)/n, "commits/msg")
	if got := len(sink.Messages()); got != 3*blocks*block {
		b.Fatalf("the sink accepted %d messages for %d", got, 3*blocks*block)
	}
}
