package smtpclient

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// benchBody is a 2 KiB canonical message.
var benchBody = func() []byte {
	var b bytes.Buffer
	b.WriteString("From: a@x.test\r\nTo: b@y.test\r\nSubject: benchmark\r\n\r\n")
	for b.Len() < 2048-80 {
		b.WriteString(strings.Repeat("lorem ipsum ", 6) + "\r\n")
	}
	b.WriteString(".dot-stuffed line\r\n")
	return b.Bytes()
}()

func benchSend(b *testing.B, addr string, ctx context.Context) {
	c, err := Dial(context.Background(), addr, "mx.test", &Config{LocalName: "client.test", TLS: TLSNone})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.Extension("PIPELINING"); !ok {
		b.Fatal("no PIPELINING")
	}
	r := bytes.NewReader(benchBody)
	tx := &Tx{From: "a@x.test", Rcpts: []string{"b@y.test"}, Body: r, Size: int64(len(benchBody))}
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(benchBody)
		res, err := c.Send(ctx, tx)
		if err != nil || res.Rcpts[0].Err != nil {
			b.Fatal(err, res.Rcpts[0].Err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// BenchmarkSendPipelined: one 2 KiB message, one recipient, a reused
// connection, pipelined, against go-smtp's server (whose allocations are
// counted in allocs/op too).
func BenchmarkSendPipelined(b *testing.B) {
	srv := smtptest.Start(b, smtptest.Options{})
	b.Run("background", func(b *testing.B) { benchSend(b, srv.Addr, context.Background()) })
	b.Run("cancelable", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		benchSend(b, srv.Addr, ctx)
	})
}

// BenchmarkSendSink is the same against a minimal sink that allocates
// nothing per message, so allocs/op is the client's own.
func BenchmarkSendSink(b *testing.B) {
	addr := smtptest.StartSink(b, false)
	b.Run("background", func(b *testing.B) { benchSend(b, addr, context.Background()) })
	b.Run("cancelable", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		benchSend(b, addr, ctx)
	})
}
