package mailroute

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkQueueDrain is issue 17's drain figure: b.N 2 KiB messages
// already in a Spool are delivered to the sink by a Mailer's queue, against
// Send's rate to the same sink through the same smarthost configuration in
// the same run (one connection, as the mailroute-smarthost row of
// BenchmarkSend2KiB). The spool is filled first, untimed, through the
// QueueStore interface; the drain is timed from New until the sink has
// every message. The benchmark fails unless the sink got exactly b.N
// messages from each part and the queue is empty afterwards.
//
//	go test -run '^$' -bench 'BenchmarkQueueDrain$' -benchtime 3000x -count 5 ./mailroute/
func BenchmarkQueueDrain(b *testing.B) {
	sink := startBenchSink(b, benchSinkSpec{IPs: []string{"127.0.0.1"}})
	t := &benchTarget{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(sink.Port)), port: sink.Port, sink: sink}
	for _, conns := range []int{1, 4} {
		b.Run("conns="+strconv.Itoa(conns), func(b *testing.B) { benchDrain(b, t, conns) })
	}
}

func benchDrain(b *testing.B, t *benchTarget, conns int) {
	ctx := context.Background()
	// Send's rate: b.N messages from conns goroutines, one session each.
	m, err := New(benchSmarthostConfig(t, conns))
	if err != nil {
		b.Fatal(err)
	}
	before := t.sink.stats(b).Msgs
	start := time.Now()
	benchEach(b.N, conns, func() {
		if _, err := m.Send(ctx, benchFrom, []string{benchRcpt}, bytes.NewReader(bench2KiB)); err != nil {
			b.Error(err)
		}
	})
	sendRate := float64(b.N) / time.Since(start).Seconds()
	m.Close()
	if got := t.sink.stats(b).Msgs - before; got != int64(b.N) {
		b.Fatalf("Send: the sink received %d messages, want %d", got, b.N)
	}

	sp := &Spool{Dir: b.TempDir()}
	defer sp.Close()
	now := time.Now()
	benchEach(b.N, 8, func() {
		qm := &QueuedMessage{From: benchFrom, Created: now, Recipients: []QueuedRecipient{{Rcpt: benchRcpt, NextAttempt: now, Queued: now}}}
		if err := sp.Enqueue(ctx, qm, bytes.NewReader(bench2KiB)); err != nil {
			b.Error(err)
		}
	})

	cfg := benchSmarthostConfig(t, conns)
	cfg.Queue = sp
	before = t.sink.stats(b).Msgs
	b.ResetTimer()
	m, err = New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for t.sink.stats(b).Msgs-before < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if err := m.Close(); err != nil {
		b.Fatal(err)
	}
	drainRate := float64(b.N) / b.Elapsed().Seconds()
	if got := t.sink.stats(b).Msgs - before; got != int64(b.N) {
		b.Fatalf("drain: the sink received %d messages, want %d", got, b.N)
	}
	if left, err := sp.List(ctx); err != nil || len(left) != 0 {
		b.Fatalf("drain: %d messages left in the queue (%v)", len(left), err)
	}
	b.ReportMetric(drainRate, "msgs/s")
	b.ReportMetric(sendRate, "send-msgs/s")
	b.ReportMetric(100*drainRate/sendRate, "%send")
}

// benchEach calls f n times from par goroutines.
func benchEach(n, par int, f func()) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				f()
			}
		})
	}
	wg.Wait()
}
