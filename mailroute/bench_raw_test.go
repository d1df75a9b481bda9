//go:build unix

package mailroute

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// The ceiling of BenchmarkSend2KiB: a raw pipelined client that does the
// least any SMTP client can do for one message on a kept connection, one
// write (MAIL, RCPT, "BDAT <n> LAST" and the body) and one wait (the three
// replies), with no checks, no deadlines, no result. mailroute's rows are
// measured against it in the same run:
//
//	go test ./mailroute -run '^$' -bench 'Send2KiB/loopback/(raw|mailroute-(relay|direct)$)' -count 5
func init() {
	benchContenders = append(benchContenders, benchContender{"raw-pipelined", func(b *testing.B, t *benchTarget) {
		if t.tls != nil {
			b.Skip("the plaintext rows are the comparison")
		}
		c, err := dialRawPipelined(t.addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.nc.Close()
		c.send(b) // the first message, as the other contenders send one before the timer
		m := t.meter(b)
		for range b.N {
			c.send(b)
		}
		m.done()
	}})
}

type rawPipelined struct {
	nc  net.Conn
	r   *bufio.Reader
	msg []byte // the whole write of one message, built once
}

func dialRawPipelined(addr string) (*rawPipelined, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &rawPipelined{nc: nc, r: bufio.NewReaderSize(nc, 4096)}
	if err := c.reply(); err != nil { // greeting
		return nil, err
	}
	if _, err := nc.Write([]byte("EHLO bench.test\r\n")); err != nil {
		return nil, err
	}
	if err := c.reply(); err != nil {
		return nil, err
	}
	var w bytes.Buffer
	w.WriteString("MAIL FROM:<" + benchFrom + "> SIZE=" + strconv.Itoa(len(bench2KiB)) + "\r\n")
	w.WriteString("RCPT TO:<" + benchRcpt + ">\r\n")
	w.WriteString("BDAT " + strconv.Itoa(len(bench2KiB)) + " LAST\r\n")
	w.Write(bench2KiB)
	c.msg = w.Bytes()
	return c, nil
}

func (c *rawPipelined) send(b *testing.B) {
	if _, err := c.nc.Write(c.msg); err != nil {
		b.Fatal(err)
	}
	for range 3 {
		if err := c.reply(); err != nil {
			b.Fatal(err)
		}
	}
}

// reply reads one reply, multi-line or not, and wants 2xx.
func (c *rawPipelined) reply() error {
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) < 4 || line[0] != '2' {
			return fmt.Errorf("reply %q", line)
		}
		if line[3] != '-' {
			return nil
		}
	}
}

// processCPU is the CPU time this process has used, user and system: the
// sender's own work per message, apart from the sink's (another process)
// and from the machine's load, which wall time cannot separate.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSend2KiBVsRaw measures mailroute's Send, to the relay and
// direct, against the raw pipelined client on one shared machine where the
// load drifts by tens of percent within seconds: the three alternate in
// blocks of 250 messages (in rotating order) on their own kept sessions
// to the same sink, and each one's wall time is summed over its own
// blocks, as is the CPU time of this process (the sender's: the sink runs
// in a process of its own). b.N messages each. The engine (internal/smtpclient alone) runs
// beside them, as the ceiling that mailroute's guarantees leave. Reported:
// each contender's msgs/s and allocations per message, and each one's rate
// as a percentage of the raw client's:
//
//	go test ./mailroute -run '^$' -bench 'Send2KiBVsRaw' -benchtime 20000x -count 5
func BenchmarkSend2KiBVsRaw(b *testing.B) {
	sink := startBenchSink(b, benchSinkSpec{
		IPs:   []string{"127.0.0.1"},
		Hosts: [][2]string{{"mx.dest.test", "127.0.0.1"}},
		MX:    [][2]string{{"dest.test", "mx.dest.test"}},
	})
	t := &benchTarget{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(sink.Port)), port: sink.Port, sink: sink}
	raw, err := dialRawPipelined(t.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	mailer := func(cfg Config) func() {
		m, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		to := []string{benchRcpt}
		return func() {
			if _, err := m.Send(ctx, benchFrom, to, bytes.NewReader(bench2KiB)); err != nil {
				b.Fatal(err)
			}
		}
	}
	// mailroute's SMTP engine alone on its own session: what the checks
	// every transaction keeps (deadlines, the socket looked at before and
	// after, reply accounting) cost before Send adds anything.
	ecfg := &smtpclient.Config{LocalName: "bench.test", TLS: smtpclient.TLSNone}
	ec, err := smtpclient.Dial(ctx, t.addr, "127.0.0.1", ecfg)
	if err != nil {
		b.Fatal(err)
	}
	defer ec.Close()
	er := bytes.NewReader(bench2KiB)
	etx := &smtpclient.Tx{From: benchFrom, Rcpts: []string{benchRcpt}, Body: er, Size: int64(len(bench2KiB))}
	var eres smtpclient.TxResult
	engine := func() {
		er.Reset(bench2KiB)
		if res, err := ec.SendInto(ctx, etx, &eres); err != nil || res.Rcpts[0].Err != nil {
			b.Fatal(err, res.Rcpts[0].Err)
		}
	}
	contenders := []struct {
		name string
		send func()
		d    time.Duration
		cpu  time.Duration // this process's CPU time (the sink runs in another)
		mall uint64
	}{
		{name: "raw", send: func() { raw.send(b) }},
		{name: "relay", send: mailer(benchSmarthostConfig(t, 0))},
		{name: "direct", send: mailer(benchDirectConfig(t))},
		{name: "engine", send: engine},
	}
	for i := range contenders {
		for range 100 { // sessions, caches, warm-up
			contenders[i].send()
		}
	}
	st0 := sink.stats(b)
	const block = 250
	var ms runtime.MemStats
	b.ResetTimer()
	for done, round := 0, 0; done < b.N; round++ {
		n := min(block, b.N-done)
		for k := range contenders {
			c := &contenders[(k+round)%len(contenders)]
			runtime.ReadMemStats(&ms)
			m0 := ms.Mallocs
			cpu0 := processCPU()
			start := time.Now()
			for range n {
				c.send()
			}
			c.d += time.Since(start)
			c.cpu += processCPU() - cpu0
			runtime.ReadMemStats(&ms)
			c.mall += ms.Mallocs - m0
		}
		done += n
	}
	b.StopTimer()
	if got := sink.stats(b).Msgs - st0.Msgs; got != int64(len(contenders)*b.N) {
		b.Fatalf("the sink received %d messages, want %d", got, len(contenders)*b.N)
	}
	n := float64(b.N)
	rate := func(d time.Duration) float64 { return n / d.Seconds() }
	for _, c := range contenders {
		b.ReportMetric(rate(c.d), c.name+"-msgs/s")
		b.ReportMetric(float64(c.mall)/n, c.name+"-allocs/msg")
		b.ReportMetric(float64(c.cpu.Microseconds())/n, c.name+"-cpu-us/msg")
		if c.name != "raw" {
			b.ReportMetric(100*rate(c.d)/rate(contenders[0].d), c.name+"-%-of-raw")
		}
	}
}
