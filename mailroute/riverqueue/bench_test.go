package riverqueue_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// The benchmarks need the peers' PostgreSQL (MAILROUTE_PEERS=1, see
// internal/peers/peers.sh env) and report msgs/s or milliseconds; ns/op
// is not the figure. Reproduce the figures of the README with
//
//	go test -run '^$' -bench . -benchtime 4000x -count 5 ./mailroute/riverqueue/
//
// (BenchmarkWake takes -benchtime 30x or so: the poll row waits half a
// second an operation.)

// benchBody is a 2 KiB canonical message whose body is base64-like text
// (as an attachment is), which PostgreSQL cannot compress much.
var benchBody = func() []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	b.WriteString("From: app@sender.test\r\nTo: someone@dest.test\r\nSubject: bench\r\n\r\n")
	for b.Len()+78 <= 2048 { // whole CRLF lines: 2,014 octets
		for range 76 {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()
}()

func benchMessage(rcpt string, now time.Time) *mailroute.QueuedMessage {
	return &mailroute.QueuedMessage{From: "app@sender.test", Created: now,
		Recipients: []mailroute.QueuedRecipient{{Rcpt: rcpt, Queued: now, NextAttempt: now}}}
}

// enqueueBatches queues n messages to u<i>@dest.test in batches of size.
func enqueueBatches(b *testing.B, s *riverqueue.Store, n, size int, prefix string) {
	b.Helper()
	ctx := context.Background()
	for i := 0; i < n; i += size {
		now := time.Now()
		var batch []riverqueue.BatchMessage
		for k := i; k < min(n, i+size); k++ {
			batch = append(batch, riverqueue.BatchMessage{
				Message: benchMessage(fmt.Sprintf("%s%d@dest.test", prefix, k), now), Body: bytes.NewReader(benchBody)})
		}
		if err := s.EnqueueBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

func reportRate(b *testing.B, msgs int, d time.Duration) {
	b.ReportMetric(float64(msgs)/d.Seconds(), "msgs/s")
}

// BenchmarkEnqueue: 2 KiB messages into the queue, durable at return. One
// operation is one message. "single-8" is Store.Enqueue from 8 callers at
// once (a transaction each); "batch-1000" is EnqueueBatch of 1,000
// messages from one caller; "ceiling-copy-1000" is what the database does
// with the same rows and nothing else: a COPY of 1,000 (id, body) rows into
// a plain table, one transaction each.
func BenchmarkEnqueue(b *testing.B) {
	b.Run("single-8", func(b *testing.B) {
		s, _ := newStore(b)
		ctx := context.Background()
		b.ResetTimer()
		start := time.Now()
		each(b, int64(b.N), 8, func(i int64) error {
			return s.Enqueue(ctx, benchMessage(fmt.Sprintf("s%d@dest.test", i), time.Now()), bytes.NewReader(benchBody))
		})
		reportRate(b, b.N, time.Since(start))
	})
	b.Run("batch-1000", func(b *testing.B) {
		s, _ := newStore(b)
		b.ResetTimer()
		start := time.Now()
		enqueueBatches(b, s, b.N, 1000, "b")
		reportRate(b, b.N, time.Since(start))
	})
	b.Run("ceiling-copy-1000", func(b *testing.B) {
		_, pool := newStore(b)
		ctx := context.Background()
		if _, err := pool.Exec(ctx, `CREATE TABLE ceiling (id text PRIMARY KEY, body bytea NOT NULL)`); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += 1000 {
			rows := make([][]any, 0, 1000)
			for k := i; k < min(b.N, i+1000); k++ {
				rows = append(rows, []any{fmt.Sprint(k), benchBody})
			}
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := tx.CopyFrom(ctx, pgx.Identifier{"ceiling"}, []string{"id", "body"}, pgx.CopyFromRows(rows))
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N, time.Since(start))
	})
}

// benchMX is a recording SMTP sink for dest.test and a DNS server naming it.
func benchMX(b *testing.B, opts smtptest.Options) (*smtptest.Server, *dnstest.Server) {
	sink := smtptest.Start(b, opts)
	dns, err := dnstest.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dns.Close() })
	dns.MX("dest.test", "mx.dest.test").Host("mx.dest.test", "127.0.0.1")
	return sink, dns
}

// samePool opens another pool on pool's database and schema, of up to
// conns connections: another instance's. tracer, when not nil, sees its
// statements.
func samePool(b *testing.B, pool *pgxpool.Pool, conns int, tracer pgx.QueryTracer) *pgxpool.Pool {
	cfg := pool.Config()
	cfg.MaxConns = int32(conns)
	if tracer != nil {
		cfg.ConnConfig.Tracer = tracer
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	return p
}

// pollOnly hides the Store's Notify: the Mailer polls, as before.
type pollOnly struct{ mailroute.QueueStore }

// BenchmarkWake: another instance starts new mail. A process that has no
// Mailer commits a transaction with one message (EnqueueTx); a Mailer on
// its own pool and Store delivers it. p50-ms and p90-ms are from the call
// to Commit to the sink's RCPT of that message (so the first attempt had
// its MX lookup, connection and MAIL before). "notify" is the Store as it
// is; "poll" hides its Notify, leaving the Mailer's poll every second.
func BenchmarkWake(b *testing.B) {
	for _, mode := range []string{"notify", "poll"} {
		b.Run(mode, func(b *testing.B) {
			producer, pool := newStore(b)
			rcptAt := make(chan time.Time, 16)
			sink, dns := benchMX(b, smtptest.Options{RcptPolicy: func(string) *smtp.SMTPError {
				rcptAt <- time.Now()
				return nil
			}})
			var store mailroute.QueueStore = &riverqueue.Store{Pool: samePool(b, pool, 8, nil)}
			if mode == "poll" {
				store = pollOnly{store}
			}
			delivered := make(chan struct{}, 16)
			m, err := mailroute.New(mailroute.Config{
				Hostname: "b.test",
				Resolver: mailroute.DNSServer(dns.Addr),
				Direct:   mailroute.DirectOptions{Port: sink.Port(), TLS: mailroute.NoTLS},
				Queue:    store,
				OnEvent: func(ev mailroute.Event) {
					if ev.Kind == mailroute.EventDelivered {
						delivered <- struct{}{}
					}
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			ctx := context.Background()
			var lat []time.Duration
			b.ResetTimer()
			for i := range b.N {
				// Let the Mailer settle into waiting, at a random
				// point of its poll.
				time.Sleep(time.Duration(50+i*37%400) * time.Millisecond)
				tx, err := pool.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := producer.EnqueueTx(ctx, tx, "app@sender.test", []string{fmt.Sprintf("w%d@dest.test", i)}, bytes.NewReader(benchBody)); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				if err := tx.Commit(ctx); err != nil {
					b.Fatal(err)
				}
				select {
				case t1 := <-rcptAt:
					lat = append(lat, t1.Sub(t0))
				case <-time.After(10 * time.Second):
					b.Fatal("the message was not started within 10 s")
				}
				<-delivered
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
		})
	}
}

// commitCounter counts the transactions that write, each ending in a
// commit that waits for the log's fsync: a pipelined batch (the store's
// outcome groups) or a statement on its own that changed rows (a claim
// that leased something). Reads (Body, an empty claim) flush nothing.
type commitCounter struct{ n atomic.Int64 }

func (c *commitCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (c *commitCounter) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	if ctx.Value(inBatch{}) == nil && d.Err == nil && d.CommandTag.RowsAffected() > 0 &&
		(d.CommandTag.Update() || d.CommandTag.Delete() || d.CommandTag.Insert()) {
		c.n.Add(1)
	}
}
func (c *commitCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.n.Add(1)
	return context.WithValue(ctx, inBatch{}, true)
}
func (c *commitCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *commitCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// BenchmarkDrain: messages already queued (EnqueueBatch, before the timer)
// delivered to a sink. One operation is one message; commits/msg counts
// the instances' writing transactions (see commitCounter). "two-*" is two
// Mailers, each on its own pool and Store, as two processes, with the
// default Concurrency (100; each pool 40 connections, as an application
// might size it), 32 (40) or 8 (16); "one-default" is one Mailer;
// "send-8" is the ceiling of the same run: Mailer.Send from 8 callers at
// once to the same sink, no queue.
func BenchmarkDrain(b *testing.B) {
	for _, c := range []struct {
		name                          string
		instances, concurrency, conns int
	}{{"two-default", 2, 0, 40}, {"two-c32", 2, 32, 40}, {"two-c8", 2, 8, 16}, {"one-default", 1, 0, 40}} {
		b.Run(c.name, func(b *testing.B) {
			s, pool := newStore(b)
			sink, dns := benchMX(b, smtptest.Options{})
			enqueueBatches(b, s, b.N, 1000, "d")
			var done atomic.Int64
			all := make(chan struct{})
			commits := &commitCounter{}
			b.ResetTimer()
			start := time.Now()
			var ms []*mailroute.Mailer
			for k := range c.instances {
				m, err := mailroute.New(mailroute.Config{
					Hostname:    fmt.Sprintf("i%d.test", k),
					Resolver:    mailroute.DNSServer(dns.Addr),
					Direct:      mailroute.DirectOptions{Port: sink.Port(), TLS: mailroute.NoTLS},
					Concurrency: c.concurrency,
					Queue:       &riverqueue.Store{Pool: samePool(b, pool, c.conns, commits)},
					OnEvent: func(ev mailroute.Event) {
						if ev.Kind == mailroute.EventDelivered && done.Add(1) == int64(b.N) {
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
			case <-time.After(10 * time.Minute):
				b.Fatalf("%d of %d delivered", done.Load(), b.N)
			}
			reportRate(b, b.N, time.Since(start))
			b.ReportMetric(float64(commits.n.Load())/float64(b.N), "commits/msg")
			b.StopTimer()
			for _, m := range ms {
				m.Close()
			}
			if got := len(sink.Messages()); got != b.N {
				b.Fatalf("the sink accepted %d messages for %d", got, b.N)
			}
		})
	}
	b.Run("send-8", func(b *testing.B) {
		sink, dns := benchMX(b, smtptest.Options{})
		m, err := mailroute.New(mailroute.Config{
			Hostname: "send.test",
			Resolver: mailroute.DNSServer(dns.Addr),
			Direct:   mailroute.DirectOptions{Port: sink.Port(), TLS: mailroute.NoTLS},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		ctx := context.Background()
		b.ResetTimer()
		start := time.Now()
		each(b, int64(b.N), 8, func(i int64) error {
			_, err := m.Send(ctx, "app@sender.test", []string{fmt.Sprintf("x%d@dest.test", i)}, bytes.NewReader(benchBody))
			return err
		})
		reportRate(b, b.N, time.Since(start))
	})
}

// each calls f with 1 to n from par goroutines, each number once, and
// reports f's errors; it returns when every call has.
func each(b *testing.B, n int64, par int, f func(i int64) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for i := next.Add(1); i <= n; i = next.Add(1) {
				if err := f(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
