//go:build linux

package mailroute

// Wide fan-out under real latency: one Send of a 2 KiB message to 10,000
// recipients over 1,000 domains, each domain with its own MX host that
// offers STARTTLS, every MX behind a delay line of 25 ms each way (a 50 ms
// round trip, typical of MX hosts on another continent):
//
//	go test ./mailroute -run '^$' -bench 'FanOut10k' -benchtime 1x -count 3
//
// The MX servers (go-smtp, one per 127.10.x.y address), their latency
// proxies (internal/latencyproxy, on 127.11.x.y) and the DNS server all run
// in the sink process, so the figures of the benchmark's process are the
// sender's own: peak heap (live and unswept objects), peak goroutines and
// peak open sockets (sockets in /proc/self/fd), sampled while Send runs.
// Every run uses a new Mailer: MX lookups, connections, EHLO, STARTTLS and
// the TLS handshake are all paid inside the timed Send.

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/mailroute/go-mailroute/internal/testpki"
)

const (
	fanOutDomains = 1000
	fanOutPerDom  = 10
	fanOutDelay   = 25 * time.Millisecond // each way
)

// fanOutAddr is the i-th (1-based) address of a /16 of loopback, skipping
// .0 and .255 in the last octet.
func fanOutAddr(net16 string, i int) string {
	return fmt.Sprintf("%s.%d.%d", net16, (i-1)/250, (i-1)%250+1)
}

// benchPeaks samples the heap, the goroutines and the open sockets of this
// process until Stop.
type benchPeaks struct {
	stop, done                   chan struct{}
	heap                         uint64
	goroutines, sockets, samples int
}

func startPeaks() *benchPeaks {
	p := &benchPeaks{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		// Every 2 ms: counting sockets reads /proc/self/fd, which costs
		// about a microsecond per descriptor.
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			p.heap = max(p.heap, s[0].Value.Uint64())
			p.goroutines = max(p.goroutines, runtime.NumGoroutine())
			p.sockets = max(p.sockets, openSockets())
			p.samples++
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *benchPeaks) Stop() {
	close(p.stop)
	<-p.done
}

// openSockets counts this process's file descriptors that are sockets,
// without allocating (the sampler must not weigh on the heap it measures):
// getdents on /proc/self/fd, then readlink of each into one buffer.
func openSockets() int {
	fd, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return -1
	}
	defer syscall.Close(fd)
	var buf [8192]byte
	var path [32]byte
	var link [64]byte
	n := 0
	for {
		got, err := syscall.Getdents(fd, buf[:])
		if err != nil || got <= 0 {
			return n
		}
		for off := 0; off < got; {
			// struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
			reclen := int(buf[off+16]) | int(buf[off+17])<<8
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			off += reclen
			if len(name) == 0 || name[0] == '.' {
				continue
			}
			p := append(append(path[:0], "/proc/self/fd/"...), name...)
			if l, err := readlinkBytes(p, link[:]); err == nil && bytes.HasPrefix(l, []byte("socket:")) {
				n++
			}
		}
	}
}

// readlinkBytes is syscall.Readlink with the path as a byte slice, NUL
// added in place of a string conversion.
func readlinkBytes(path []byte, buf []byte) ([]byte, error) {
	var z [48]byte
	copy(z[:], path)
	r, _, e := syscall.Syscall6(syscall.SYS_READLINKAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(&z[0])),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e != 0 {
		return nil, e
	}
	return buf[:r], nil
}

var atFDCWD = -100 // AT_FDCWD: a relative path is from the working directory

// BenchmarkFanOut10k: see the file's comment. Sub-benchmarks by the
// Mailer's Concurrency: the default, 32, and the old default of 8 for
// comparison (slow, about a minute: -bench 'FanOut10k/concurrency8').
func BenchmarkFanOut10k(b *testing.B) {
	ca := testpki.New(b)
	var names []string
	for d := 1; d <= fanOutDomains; d++ {
		names = append(names, fmt.Sprintf("mx%04d.fan.test", d))
	}
	certPEM, keyPEM, err := testpki.EncodePEM(ca.Issue("*.fan.test")) // opportunistic TLS: not verified
	if err != nil {
		b.Fatal(err)
	}
	spec := benchSinkSpec{CertPEM: certPEM, KeyPEM: keyPEM, Delay: fanOutDelay}
	var to []string
	for d := 1; d <= fanOutDomains; d++ {
		spec.IPs = append(spec.IPs, fanOutAddr("127.10", d))
		spec.ProxyIPs = append(spec.ProxyIPs, fanOutAddr("127.11", d))
		host, domain := names[d-1], fmt.Sprintf("d%04d.fan.test", d)
		spec.Hosts = append(spec.Hosts, [2]string{host, fanOutAddr("127.11", d)})
		spec.MX = append(spec.MX, [2]string{domain, host})
		for u := range fanOutPerDom {
			to = append(to, fmt.Sprintf("u%d@%s", u, domain))
		}
	}
	sink := startBenchSink(b, spec)

	run := func(b *testing.B, concurrency int) {
		b.ReportAllocs()
		st0 := sink.stats(b)
		var heap uint64
		var gor, socks int
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			m, err := New(Config{
				Hostname:    "bench.test",
				Router:      Rules{{Domains: []string{"*"}, Via: Direct}},
				Resolver:    DNSServer(sink.DNS),
				Direct:      DirectOptions{Port: sink.Port}, // opportunistic STARTTLS, the default
				Concurrency: concurrency,
			})
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			peaks := startPeaks()
			b.StartTimer()
			res, err := m.Send(ctx, benchFrom, to, bytes.NewReader(bench2KiB))
			b.StopTimer()
			peaks.Stop()
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range res.Recipients {
				if r.Status != Delivered {
					b.Fatalf("%s: %v", r.Rcpt, r.Err)
				}
				if r.TLS == TLSNone {
					b.Fatalf("%s: delivered without TLS", r.Rcpt)
				}
			}
			m.Close()
			heap, gor, socks = max(heap, peaks.heap), max(gor, peaks.goroutines), max(socks, peaks.sockets)
			b.StartTimer()
		}
		b.StopTimer()
		st := sink.stats(b)
		n := float64(b.N)
		if got := st.Rcpts - st0.Rcpts; got != int64(len(to)*b.N) {
			b.Fatalf("the sink accepted %d recipients, want %d", got, len(to)*b.N)
		}
		b.ReportMetric(b.Elapsed().Seconds()/n, "s/send")
		b.ReportMetric(float64(st.Conns-st0.Conns)/n, "conns/op")
		b.ReportMetric(float64(st.Msgs-st0.Msgs)/n, "txns/op")
		b.ReportMetric(float64(heap)/mib, "peak-heap-MiB")
		b.ReportMetric(float64(gor), "peak-goroutines")
		b.ReportMetric(float64(socks), "peak-sockets")
	}
	b.Run("concurrency-default", func(b *testing.B) { run(b, 0) })
	b.Run("concurrency32", func(b *testing.B) { run(b, 32) })
	b.Run("concurrency8", func(b *testing.B) { run(b, 8) })
}
