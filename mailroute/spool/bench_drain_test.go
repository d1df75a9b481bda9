package spool_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// BenchmarkQueueDrain is issue 17's drain figure: b.N 2 KiB messages
// already in a Store are delivered to a sink by a Mailer's queue, against
// Send's rate to the same sink through the same relay configuration in
// the same run, with conns connections (and as many Send callers). The
// store is filled first, untimed, through the QueueStore interface; the
// drain is timed from New until the queue has recorded every delivery. The sink is a
// go-smtp server in this process, for both parts alike. The benchmark
// fails unless the sink got exactly b.N messages from each part and the
// queue is empty afterwards.
//
//	go test -run '^$' -bench 'BenchmarkQueueDrain$' -benchtime 3000x -count 5 ./mailroute/spool/
func BenchmarkQueueDrain(b *testing.B) {
	for _, conns := range []int{1, 4} {
		b.Run("conns="+strconv.Itoa(conns), func(b *testing.B) { benchDrain(b, conns, false) })
	}
}

// BenchmarkQueueDrainNoSync is BenchmarkQueueDrain on a Store with fsync
// off (Store.NoSync), in memory where the system has a tmpfs at /dev/shm:
// what the queue's runtime itself costs, with the disk out of the figure
// (its syncs, and its metadata writes, which on a disk other programs
// keep busy cost more than the rest). Its ratio to Send is the runtime's
// ceiling for the durable drain.
//
//	go test -run '^$' -bench 'BenchmarkQueueDrainNoSync$' -benchtime 3000x -count 5 ./mailroute/spool/
func BenchmarkQueueDrainNoSync(b *testing.B) {
	for _, conns := range []int{1, 4} {
		b.Run("conns="+strconv.Itoa(conns), func(b *testing.B) { benchDrain(b, conns, true) })
	}
}

const (
	benchFrom = "sender@bench.test"
	benchRcpt = "rcpt@dest.test"
)

// bench2KiB is a canonical 2 KiB message.
var bench2KiB = func() []byte {
	head := "From: <" + benchFrom + ">\r\nTo: <" + benchRcpt + ">\r\nSubject: benchmark\r\n\r\n"
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:76] + "\r\n"
	body := strings.Repeat(line, (2048-len(head))/len(line))
	return []byte(head + body + strings.Repeat("x", 2048-len(head)-len(body)-2) + "\r\n")
}()

func benchRelayConfig(sink *smtptest.Server, conns int) mailroute.Config {
	return mailroute.Config{
		Hostname: "bench.test",
		Router:   mailroute.Rules{{Domains: []string{"*"}, Via: mailroute.Relayed}},
		Relay: &mailroute.Relay{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(sink.Port())),
			InsecurePlaintextLoopback: true, MaxIdle: conns},
		MaxConnsPerHost: conns,
	}
}

func benchDrain(b *testing.B, conns int, noSync bool) {
	ctx := context.Background()
	sink := smtptest.Start(b, smtptest.Options{})

	// Send's rate: b.N messages from conns callers.
	m, err := mailroute.New(benchRelayConfig(sink, conns))
	if err != nil {
		b.Fatal(err)
	}
	cpu, start := benchCPU(), time.Now()
	benchEach(b.N, conns, func() {
		if _, err := m.Send(ctx, benchFrom, []string{benchRcpt}, bytes.NewReader(bench2KiB)); err != nil {
			b.Error(err)
		}
	})
	sendRate := float64(b.N) / time.Since(start).Seconds()
	sendCPU := benchCPU() - cpu
	m.Close()
	if got := len(sink.Messages()); got != b.N {
		b.Fatalf("Send: the sink received %d messages, want %d", got, b.N)
	}

	st := &spool.Store{Dir: benchDir(b, noSync), NoSync: noSync}
	defer st.Close()
	now := time.Now()
	benchEach(b.N, 8, func() {
		qm := &mailroute.QueuedMessage{From: benchFrom, Created: now,
			Recipients: []mailroute.QueuedRecipient{{Rcpt: benchRcpt, NextAttempt: now, Queued: now}}}
		if err := st.Enqueue(ctx, qm, bytes.NewReader(bench2KiB)); err != nil {
			b.Error(err)
		}
	})

	cfg := benchRelayConfig(sink, conns)
	cfg.Queue = st
	// Done when the queue has recorded every delivery (the event follows
	// the store's Update); the sink's count is checked after.
	var delivered atomic.Int64
	done := make(chan struct{})
	cfg.OnEvent = func(ev mailroute.Event) {
		if ev.Kind == mailroute.EventDelivered && delivered.Add(1) == int64(b.N) {
			close(done)
		}
	}
	cpu = benchCPU()
	b.ResetTimer()
	m, err = mailroute.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	<-done
	b.StopTimer()
	drainCPU := benchCPU() - cpu
	if err := m.Close(); err != nil {
		b.Fatal(err)
	}
	drainRate := float64(b.N) / b.Elapsed().Seconds()
	if got := len(sink.Messages()) - b.N; got != b.N {
		b.Fatalf("drain: the sink received %d messages, want %d", got, b.N)
	}
	if left, err := st.List(ctx); err != nil || len(left) != 0 {
		b.Fatalf("drain: %d messages left in the queue (%v)", len(left), err)
	}
	b.ReportMetric(drainRate, "msgs/s")
	b.ReportMetric(sendRate, "send-msgs/s")
	b.ReportMetric(100*drainRate/sendRate, "%send")
	// CPU time per message (this process: Mailer, store and sink), which
	// the load of a shared machine inflates far less than wall time.
	b.ReportMetric(float64(drainCPU.Microseconds())/float64(b.N), "cpu-us/msg")
	b.ReportMetric(float64(sendCPU.Microseconds())/float64(b.N), "send-cpu-us/msg")
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

// benchDir is the Store's directory: in memory (/dev/shm) for the runs
// without fsync when there is one, else a temporary directory on disk.
func benchDir(b *testing.B, inMemory bool) string {
	if inMemory {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			dir, err := os.MkdirTemp("/dev/shm", "mailroute-bench-")
			if err == nil {
				b.Cleanup(func() { os.RemoveAll(dir) })
				return dir
			}
		}
	}
	return b.TempDir()
}
