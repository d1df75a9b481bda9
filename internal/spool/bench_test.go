package spool

import (
	"bytes"
	"context"
	"testing"
)

// The benchmarks enqueue 2 KiB messages into b.TempDir(), which is on the
// real disk (not tmpfs) unless TMPDIR says otherwise, so the fsync numbers
// are real. They report messages per second and fsync or syncfs calls per
// message, which shows what group commit shares.

func BenchmarkEnqueue(b *testing.B) {
	b.Run("fsync", func(b *testing.B) { benchEnqueue(b, Options{}, 1) })
	b.Run("nosync", func(b *testing.B) { benchEnqueue(b, Options{NoSync: true}, 1) })
}

// BenchmarkEnqueueParallel runs 16 enqueuers per GOMAXPROCS, the way many
// concurrent Send calls would, with and without group commit.
func BenchmarkEnqueueParallel(b *testing.B) {
	b.Run("group", func(b *testing.B) { benchEnqueue(b, Options{}, 16) })
	b.Run("nogroup", func(b *testing.B) { benchEnqueue(b, Options{NoGroupCommit: true}, 16) })
	b.Run("nosync", func(b *testing.B) { benchEnqueue(b, Options{NoSync: true}, 16) })
}

func benchEnqueue(b *testing.B, opts Options, parallelism int) {
	s, err := Open(b.TempDir(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := testBody(2048, 1)
	enqueue := func() {
		m := testMessage("", t0, "a@example.com") // Enqueue assigns a fresh ID
		if err := s.Enqueue(context.Background(), m, bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	if parallelism == 1 {
		for range b.N {
			enqueue()
		}
	} else {
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				enqueue()
			}
		})
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(s.fs.syncs.Load())/float64(b.N), "syncs/msg")
}
