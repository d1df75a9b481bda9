//go:build unix

package mailroute

// Throughput, round trips and memory of mailroute against the other ways of
// sending mail from Go, every contender in the same run against the same
// sink:
//
//	go test ./mailroute -run '^$' -bench 'Send2KiB|FanOut|Large25MiB' -count 3
//
// The sink is a go-smtp server (plus a DNS server for direct delivery) in a
// child process — the test binary run again as TestBenchSinkHelperProcess —
// that reads every message and discards it. Being out of process, its
// allocations, GC and CPU are not counted against the client: allocs/op,
// cpu-us/msg and peak heap are the sender's own (in the latency runs, plus
// those of the in-process latency proxy). It shares the machine's CPUs with
// the client, as a local relay would. MAILROUTE_BENCH_SINK_INPROCESS=1 runs
// it in the benchmark's process instead.
//
// Metrics: msgs/s (b.N over the timed wall time); allocs/op and B/op (per
// message); cpu-us/msg and sink-cpu-us/msg (user+system CPU time of the
// client process and of the sink process per message: on a shared, noisy
// machine far steadier than wall time); rt/msg (round trips per message
// counted by internal/latencyproxy: one per TCP connect plus one each time
// the client waited for the server); conns/msg (connections the sink
// accepted per message); peak-heap-MiB (the largest
// "/memory/classes/heap/objects:bytes", live and not yet swept objects,
// sampled every 100 µs during the send).
//
// Contenders that keep a connection (go-smtp, mailroute) open it and send
// one message before the timer starts; the others pay for their
// connections inside the timed loop, as they would in use.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	netsmtp "net/smtp"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	gomail "github.com/wneessen/go-mail"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/internal/latencyproxy"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

const benchDelay = 2 * time.Millisecond // each way: a 4 ms round trip

// bench2KiBBody is bench2KiB's body, for go-mail, which writes its own
// header fields.
var bench2KiBBody = string(bench2KiB[bytes.Index(bench2KiB, []byte("\r\n\r\n"))+4:])

// --- The sink process -----------------------------------------------------

const benchSinkEnv = "MAILROUTE_BENCH_SINK"

// benchSinkSpec tells the sink process what to serve.
type benchSinkSpec struct {
	IPs             []string    // go-smtp servers on these addresses, all on one port
	CertPEM, KeyPEM []byte      // when set, the servers offer STARTTLS
	Hosts           [][2]string // DNS: host name → IPv4 address
	MX              [][2]string // DNS: domain → MX host
	// ProxyIPs, when set, has one address per IPs entry: a latency proxy
	// adding Delay each way listens there, on the servers' port, in front
	// of that server. In the sink process, so that the sender's process
	// counts only its own goroutines, sockets and heap.
	ProxyIPs []string
	Delay    time.Duration
}

type benchSinkStats struct {
	Conns, Msgs, Rcpts, Bytes int64
	CPU                       time.Duration // the sink process's user+system time
}

// benchCPU returns the user+system CPU time of this process so far.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestBenchSinkHelperProcess is not a test: it is the sink process of the
// benchmarks, started by startBenchSink. It prints {"port","dns"} on one
// line, answers each "stats" line on stdin with the counts so far, and ends
// when stdin closes.
func TestBenchSinkHelperProcess(t *testing.T) {
	env := os.Getenv(benchSinkEnv)
	if env == "" {
		t.Skip("the benchmarks' sink process, started by startBenchSink")
	}
	if path, ok := strings.CutPrefix(env, "@"); ok {
		// A spec too large for the environment, in a file.
		js, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		env = string(js)
	}
	var spec benchSinkSpec
	if err := json.Unmarshal([]byte(env), &spec); err != nil {
		t.Fatal(err)
	}
	srv, err := startBenchSinkServer(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"port": srv.port, "dns": srv.dns.Addr})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		out.Encode(srv.stats())
	}
}

// benchSinkServer is what the sink process runs: go-smtp servers on one
// port and a DNS server.
type benchSinkServer struct {
	port    int
	dns     *dnstest.Server
	servers []*gosmtp.Server
	proxies []*latencyproxy.Proxy

	conns, msgs, rcpts, octets atomic.Int64
}

func startBenchSinkServer(spec benchSinkSpec) (*benchSinkServer, error) {
	s := &benchSinkServer{}
	var tlsConf *tls.Config
	if spec.CertPEM != nil {
		cert, err := tls.X509KeyPair(spec.CertPEM, spec.KeyPEM)
		if err != nil {
			return nil, err
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	be := gosmtp.BackendFunc(func(*gosmtp.Conn) (gosmtp.Session, error) {
		return &benchSinkSession{rcpts: &s.rcpts, msgs: &s.msgs, octets: &s.octets}, nil
	})
	for _, ip := range spec.IPs {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(s.port)))
		if err != nil {
			s.close()
			return nil, err
		}
		s.port = ln.Addr().(*net.TCPAddr).Port
		srv := gosmtp.NewServer(be)
		srv.Domain = "sink.test"
		srv.MaxMessageBytes = 64 << 20
		srv.TLSConfig = tlsConf
		srv.ErrorLog = log.New(io.Discard, "", 0)
		go srv.Serve(benchCountingListener{ln, &s.conns})
		s.servers = append(s.servers, srv)
	}
	for i, ip := range spec.ProxyIPs {
		p, err := latencyproxy.Start(latencyproxy.Options{
			Listen: net.JoinHostPort(ip, strconv.Itoa(s.port)),
			Target: net.JoinHostPort(spec.IPs[i], strconv.Itoa(s.port)),
			Delay:  spec.Delay,
		})
		if err != nil {
			s.close()
			return nil, err
		}
		s.proxies = append(s.proxies, p)
	}
	dns, err := dnstest.Start()
	if err != nil {
		s.close()
		return nil, err
	}
	s.dns = dns
	for _, h := range spec.Hosts {
		dns.Host(h[0], h[1])
	}
	for _, m := range spec.MX {
		dns.MX(m[0], m[1])
	}
	return s, nil
}

func (s *benchSinkServer) stats() benchSinkStats {
	return benchSinkStats{Conns: s.conns.Load(), Msgs: s.msgs.Load(), Rcpts: s.rcpts.Load(), Bytes: s.octets.Load(), CPU: benchCPU()}
}

func (s *benchSinkServer) close() {
	for _, p := range s.proxies {
		p.Close()
	}
	for _, srv := range s.servers {
		srv.Close()
	}
	if s.dns != nil {
		s.dns.Close()
	}
}

type benchCountingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l benchCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// benchSinkSession reads every message to the end and keeps nothing.
type benchSinkSession struct {
	rcpts, msgs, octets *atomic.Int64
	n                   int64
}

func (s *benchSinkSession) Mail(string, *gosmtp.MailOptions) error { s.n = 0; return nil }
func (s *benchSinkSession) Rcpt(string, *gosmtp.RcptOptions) error { s.n++; return nil }
func (s *benchSinkSession) Reset()                                 { s.n = 0 }
func (s *benchSinkSession) Logout() error                          { return nil }
func (s *benchSinkSession) Data(r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return err
	}
	s.octets.Add(n)
	s.rcpts.Add(s.n)
	s.msgs.Add(1) // before the 250 goes out: a client that has it sees the count
	return nil
}

// benchSinkInProcessEnv, set to 1, runs the sink in the benchmark's own
// process instead: its allocations and GC then count against every
// contender, and its goroutines trade places with theirs on the same
// scheduler.
const benchSinkInProcessEnv = "MAILROUTE_BENCH_SINK_INPROCESS"

// benchSink is the benchmark's handle on a sink process.
type benchSink struct {
	Port int
	DNS  string

	local *benchSinkServer // in-process mode

	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Scanner
}

func startBenchSink(b testing.TB, spec benchSinkSpec) *benchSink {
	b.Helper()
	if os.Getenv(benchSinkInProcessEnv) == "1" {
		srv, err := startBenchSinkServer(spec)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(srv.close)
		return &benchSink{Port: srv.port, DNS: srv.dns.Addr, local: srv}
	}
	js, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchSinkHelperProcess$", "-test.count=1", "-test.timeout=0")
	arg := string(js)
	if len(js) > 32<<10 {
		// Past the kernel's limit on one environment string: in a file.
		path := b.TempDir() + "/sink-spec.json"
		if err := os.WriteFile(path, js, 0o600); err != nil {
			b.Fatal(err)
		}
		arg = "@" + path
	}
	cmd.Env = append(os.Environ(), benchSinkEnv+"="+arg)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	s := &benchSink{in: in, out: bufio.NewScanner(stdout)}
	var hello struct {
		Port int    `json:"port"`
		DNS  string `json:"dns"`
	}
	if !s.out.Scan() || json.Unmarshal(s.out.Bytes(), &hello) != nil {
		b.Fatalf("sink process: %q %v", s.out.Bytes(), s.out.Err())
	}
	s.Port, s.DNS = hello.Port, hello.DNS
	return s
}

func (s *benchSink) stats(b testing.TB) benchSinkStats {
	if s.local != nil {
		st := s.local.stats()
		st.CPU = 0 // the same process: counted as the client's
		return st
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var st benchSinkStats
	if _, err := io.WriteString(s.in, "stats\n"); err != nil {
		b.Fatal(err)
	}
	if !s.out.Scan() || json.Unmarshal(s.out.Bytes(), &st) != nil {
		b.Fatalf("sink stats: %q %v", s.out.Bytes(), s.out.Err())
	}
	return st
}

// --- Peak heap ------------------------------------------------------------

// benchHeapPeak samples the heap (live objects and those not yet swept)
// every 100 µs until Stop.
type benchHeapPeak struct {
	stop, done chan struct{}
	peak       uint64
}

func benchHeapSample() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapPeak() *benchHeapPeak {
	h := &benchHeapPeak{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			h.peak = max(h.peak, s[0].Value.Uint64())
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

// Stop ends the sampling and returns the peak in octets.
func (h *benchHeapPeak) Stop() uint64 {
	close(h.stop)
	<-h.done
	return max(h.peak, benchHeapSample())
}

const mib = 1 << 20

// --- Sequential 2 KiB sends -----------------------------------------------

// benchTarget is where a contender sends: the sink itself, or the latency
// proxy in front of it.
type benchTarget struct {
	addr  string // host:port the client connects to
	port  int
	sink  *benchSink
	proxy *latencyproxy.Proxy // nil on plain loopback
	tls   *tls.Config         // verifies the sink's certificate; nil: plaintext sink
}

// benchMeter measures one timed loop: call it after setup and warm-up, run
// b.N messages, then done.
type benchMeter struct {
	b   *testing.B
	t   *benchTarget
	st  benchSinkStats
	rt  int
	cpu time.Duration
}

func (t *benchTarget) meter(b *testing.B) *benchMeter {
	m := &benchMeter{b: b, t: t, st: t.sink.stats(b), cpu: benchCPU()}
	if t.proxy != nil {
		m.rt = t.proxy.RoundTrips()
	}
	b.ReportAllocs()
	b.ResetTimer()
	return m
}

func (m *benchMeter) done() {
	b := m.b
	b.StopTimer()
	cpu := benchCPU() - m.cpu
	st := m.t.sink.stats(b)
	if got := st.Msgs - m.st.Msgs; got != int64(b.N) {
		b.Fatalf("the sink received %d messages, want %d", got, b.N)
	}
	n := float64(b.N)
	b.ReportMetric(n/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(st.Conns-m.st.Conns)/n, "conns/msg")
	// CPU time per message, which the load of a shared machine inflates
	// far less than wall time.
	b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-us/msg")
	if m.t.sink.local == nil {
		b.ReportMetric(float64((st.CPU-m.st.CPU).Microseconds())/n, "sink-cpu-us/msg")
	}
	if m.t.proxy != nil {
		b.ReportMetric(float64(m.t.proxy.RoundTrips()-m.rt)/n, "rt/msg")
	}
}

// benchContender sends b.N 2 KiB messages one after the other.
type benchContender struct {
	name string
	run  func(b *testing.B, t *benchTarget)
}

var benchContenders = []benchContender{
	// net/smtp.SendMail: a new connection, EHLO and QUIT for each message.
	{"netsmtp-SendMail", func(b *testing.B, t *benchTarget) {
		if t.tls != nil {
			b.Skip("net/smtp.SendMail verifies against the system roots only")
		}
		m := t.meter(b)
		for range b.N {
			if err := netsmtp.SendMail(t.addr, nil, benchFrom, []string{benchRcpt}, bench2KiB); err != nil {
				b.Fatal(err)
			}
		}
		m.done()
	}},
	// go-smtp's client on one connection kept for the whole run.
	{"gosmtp-reused", func(b *testing.B, t *benchTarget) {
		var c *gosmtp.Client
		var err error
		if t.tls != nil {
			c, err = gosmtp.DialStartTLS(t.addr, t.tls)
		} else {
			c, err = gosmtp.Dial(t.addr)
		}
		if err != nil {
			b.Fatal(err)
		}
		defer c.Quit()
		r := bytes.NewReader(bench2KiB)
		send := func() {
			r.Reset(bench2KiB)
			if err := c.SendMail(benchFrom, []string{benchRcpt}, r); err != nil {
				b.Fatal(err)
			}
		}
		send() // EHLO happens on first use
		m := t.meter(b)
		for range b.N {
			send()
		}
		m.done()
	}},
	// go-mail: DialAndSend with 100 messages per connection (its NOOP
	// check once per batch, RSET after each message: the defaults).
	{"gomail-batch100", func(b *testing.B, t *benchTarget) {
		opts := []gomail.Option{gomail.WithPort(t.port), gomail.WithHELO("bench.test")}
		if t.tls != nil {
			opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory), gomail.WithTLSConfig(t.tls))
		} else {
			opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
		}
		c, err := gomail.NewClient("127.0.0.1", opts...)
		if err != nil {
			b.Fatal(err)
		}
		msgs := make([]*gomail.Msg, 100)
		for i := range msgs {
			msg := gomail.NewMsg(gomail.WithEncoding(gomail.NoEncoding))
			if err := msg.From(benchFrom); err != nil {
				b.Fatal(err)
			}
			if err := msg.To(benchRcpt); err != nil {
				b.Fatal(err)
			}
			msg.Subject("benchmark")
			msg.SetBodyString(gomail.TypeTextPlain, bench2KiBBody)
			msgs[i] = msg
		}
		m := t.meter(b)
		for i := 0; i < b.N; i += len(msgs) {
			if err := c.DialAndSend(msgs[:min(len(msgs), b.N-i)]...); err != nil {
				b.Fatal(err)
			}
		}
		m.done()
	}},
	// mailroute to a relay: sessions pooled, MAIL+RCPT+DATA pipelined.
	{"mailroute-relay", func(b *testing.B, t *benchTarget) {
		benchMailroute(b, t, benchSmarthostConfig(t, 0), benchRcpt, 1)
	}},
	// mailroute direct: MX lookup (cached), then the MX host's address and a
	// pooled session.
	{"mailroute-direct", func(b *testing.B, t *benchTarget) {
		benchMailroute(b, t, benchDirectConfig(t), benchRcpt, 1)
	}},
	// Diagnostic: direct to an address literal, so no DNS at all; the
	// difference from mailroute-direct is the per-message address lookup.
	{"mailroute-direct-literal", func(b *testing.B, t *benchTarget) {
		if t.proxy != nil || t.tls != nil {
			b.Skip("loopback diagnostic only")
		}
		benchMailroute(b, t, benchDirectConfig(t), "rcpt@[127.0.0.1]", 1)
	}},
	// Diagnostic: mailroute's SMTP engine alone (internal/smtpclient) on one
	// connection, as mailroute-relay uses it; the difference is the
	// cost of Send around it (envelope, body, routing, pool, result).
	{"engine-smtpclient", func(b *testing.B, t *benchTarget) {
		if t.proxy != nil {
			b.Skip("loopback diagnostic only")
		}
		cfg := &smtpclient.Config{LocalName: "bench.test", TLS: smtpclient.TLSOpportunistic}
		if t.tls != nil {
			cfg.TLS, cfg.TLSConfig = smtpclient.TLSRequired, t.tls
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		c, err := smtpclient.Dial(ctx, t.addr, "127.0.0.1", cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Quit(ctx)
		r := bytes.NewReader(bench2KiB)
		tx := &smtpclient.Tx{From: benchFrom, Rcpts: []string{benchRcpt}, Body: r, Size: int64(len(bench2KiB))}
		send := func() {
			r.Reset(bench2KiB)
			res, err := c.Send(ctx, tx)
			if err != nil || res.Rcpts[0].Err != nil {
				b.Fatal(err, res.Rcpts[0].Err)
			}
		}
		send()
		m := t.meter(b)
		for range b.N {
			send()
		}
		m.done()
	}},
	// mailroute to a relay from 4 goroutines at once, 4 sessions.
	{"mailroute-relay-x4", func(b *testing.B, t *benchTarget) {
		if t.tls != nil {
			b.Skip("the sequential rows are the comparison")
		}
		benchMailroute(b, t, benchSmarthostConfig(t, 4), benchRcpt, 4)
	}},
}

func benchSmarthostConfig(t *benchTarget, conns int) Config {
	relay := &Relay{Addr: t.addr, InsecurePlaintextLoopback: true}
	if t.tls != nil {
		relay = &Relay{Addr: t.addr, TLSConfig: t.tls} // STARTTLS required, verified
	}
	relay.MaxIdle = conns
	return Config{
		Hostname:        "bench.test",
		Router:          Rules{{Domains: []string{"*"}, Via: Relayed}},
		Relay:           relay,
		MaxConnsPerHost: conns,
	}
}

func benchDirectConfig(t *benchTarget) Config {
	return Config{
		Hostname: "bench.test",
		Router:   Rules{{Domains: []string{"*"}, Via: Direct}},
		Resolver: DNSServer(t.sink.DNS),
		Direct:   DirectOptions{Port: t.port}, // opportunistic TLS, the default
	}
}

// benchMailroute sends b.N messages with Send, from par goroutines.
func benchMailroute(b *testing.B, t *benchTarget, cfg Config, rcpt string, par int) {
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	to := []string{rcpt}
	send := func() {
		if _, err := m.Send(ctx, benchFrom, to, bytes.NewReader(bench2KiB)); err != nil {
			b.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range par { // open the sessions
		wg.Go(send)
	}
	wg.Wait()
	meter := t.meter(b)
	if par == 1 {
		for range b.N {
			send()
		}
	} else {
		var next atomic.Int64
		for range par {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					send()
				}
			})
		}
		wg.Wait()
	}
	meter.done()
}

// BenchmarkSend2KiB: one 2 KiB message to one recipient at a time, through
// each contender, on loopback, through a 2 ms-each-way latency proxy, and
// with STARTTLS.
func BenchmarkSend2KiB(b *testing.B) {
	sink := startBenchSink(b, benchSinkSpec{
		IPs:   []string{"127.0.0.1"},
		Hosts: [][2]string{{"mx.dest.test", "127.0.0.1"}},
		MX:    [][2]string{{"dest.test", "mx.dest.test"}},
	})
	sinkAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sink.Port))
	b.Run("loopback", func(b *testing.B) {
		t := &benchTarget{addr: sinkAddr, port: sink.Port, sink: sink}
		for _, c := range benchContenders {
			b.Run(c.name, func(b *testing.B) { c.run(b, t) })
		}
	})
	b.Run("latency2ms", func(b *testing.B) {
		p, err := latencyproxy.Start(latencyproxy.Options{Target: sinkAddr, Delay: benchDelay})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		t := &benchTarget{addr: p.Addr, port: p.Port(), sink: sink, proxy: p}
		for _, c := range benchContenders {
			b.Run(c.name, func(b *testing.B) { c.run(b, t) })
		}
	})
	b.Run("starttls", func(b *testing.B) {
		ca := testpki.New(b)
		certPEM, keyPEM, err := testpki.EncodePEM(ca.Issue("127.0.0.1", "mx.dest.test"))
		if err != nil {
			b.Fatal(err)
		}
		tsink := startBenchSink(b, benchSinkSpec{
			IPs:     []string{"127.0.0.1"},
			CertPEM: certPEM, KeyPEM: keyPEM,
			Hosts: [][2]string{{"mx.dest.test", "127.0.0.1"}},
			MX:    [][2]string{{"dest.test", "mx.dest.test"}},
		})
		t := &benchTarget{
			addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(tsink.Port)), port: tsink.Port,
			sink: tsink, tls: ca.ClientConfig("127.0.0.1"),
		}
		for _, c := range benchContenders {
			b.Run(c.name, func(b *testing.B) { c.run(b, t) })
		}
	})
}

// --- Fan-out --------------------------------------------------------------

const benchDomains = 100

// benchFanOutSink serves n domains dNNN.test, each with its own MX host
// mxNNN.test on 127.0.1.NNN, all on one port; lmxNNN.test (domains
// lNNN.test) name 127.0.2.NNN, where the latency runs put a proxy.
func benchFanOutSink(b *testing.B, n int) *benchSink {
	spec := benchSinkSpec{}
	for i := 1; i <= n; i++ {
		spec.IPs = append(spec.IPs, fmt.Sprintf("127.0.1.%d", i))
		spec.Hosts = append(spec.Hosts,
			[2]string{fmt.Sprintf("mx%03d.test", i), fmt.Sprintf("127.0.1.%d", i)},
			[2]string{fmt.Sprintf("lmx%03d.test", i), fmt.Sprintf("127.0.2.%d", i)})
		spec.MX = append(spec.MX,
			[2]string{fmt.Sprintf("d%03d.test", i), fmt.Sprintf("mx%03d.test", i)},
			[2]string{fmt.Sprintf("l%03d.test", i), fmt.Sprintf("lmx%03d.test", i)})
	}
	return startBenchSink(b, spec)
}

// benchSendMeasured sends one message with a fresh Mailer (or m when
// given) and returns the peak heap, absolute and above the heap after a GC
// just before, with the timer running only around Send.
func benchSendMeasured(b *testing.B, m *Mailer, from string, to []string, msg []byte) (peak, over uint64) {
	b.StopTimer()
	runtime.GC()
	base := benchHeapSample()
	h := startHeapPeak()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b.StartTimer()
	res, err := m.Send(ctx, from, to, bytes.NewReader(msg))
	b.StopTimer()
	peak = h.Stop()
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range res.Recipients {
		if r.Status != Delivered {
			b.Fatalf("%s: %v", r.Rcpt, r.Err)
		}
	}
	return peak, peak - min(base, peak)
}

// BenchmarkFanOut: one 2 KiB message to 1,000 recipients over 100 domains,
// each domain with its own MX server. "cold" makes a new Mailer for every
// message (MX lookups, connections, EHLO); "warm" reuses one (MX answers
// cached, sessions pooled). ns/op is the wall time of one Send.
func BenchmarkFanOut(b *testing.B) {
	sink := benchFanOutSink(b, benchDomains)
	rcpts := func(prefix string) []string {
		var out []string
		for d := 1; d <= benchDomains; d++ {
			for u := range 10 {
				out = append(out, fmt.Sprintf("u%d@%s%03d.test", u, prefix, d))
			}
		}
		return out
	}
	cfg := func(port, concurrency int) Config {
		return Config{
			Hostname:    "bench.test",
			Router:      Rules{{Domains: []string{"*"}, Via: Direct}},
			Resolver:    DNSServer(sink.DNS),
			Direct:      DirectOptions{Port: port},
			Concurrency: concurrency,
		}
	}
	run := func(b *testing.B, to []string, port, concurrency int, warm bool) {
		b.ReportAllocs()
		var m *Mailer
		newMailer := func() *Mailer {
			mm, err := New(cfg(port, concurrency))
			if err != nil {
				b.Fatal(err)
			}
			return mm
		}
		if warm {
			m = newMailer()
			defer m.Close()
			benchSendMeasured(b, m, benchFrom, to, bench2KiB)
		}
		st0 := sink.stats(b)
		var peak, over uint64
		b.ResetTimer()
		for range b.N {
			mm := m
			if !warm {
				b.StopTimer()
				mm = newMailer()
			}
			p, o := benchSendMeasured(b, mm, benchFrom, to, bench2KiB)
			peak, over = max(peak, p), max(over, o)
			if !warm {
				mm.Close()
			}
			b.StartTimer()
		}
		b.StopTimer()
		st := sink.stats(b)
		n := float64(b.N)
		if got := st.Rcpts - st0.Rcpts; got != int64(len(to)*b.N) {
			b.Fatalf("the sink accepted %d recipients, want %d", got, len(to)*b.N)
		}
		b.ReportMetric(float64(st.Conns-st0.Conns)/n, "conns/op")
		b.ReportMetric(float64(st.Msgs-st0.Msgs)/n, "txns/op")
		b.ReportMetric(float64(peak)/mib, "peak-heap-MiB")
		b.ReportMetric(float64(over)/mib, "peak-over-base-MiB")
	}
	b.Run("loopback-cold", func(b *testing.B) { run(b, rcpts("d"), sink.Port, 0, false) })
	b.Run("loopback-warm", func(b *testing.B) { run(b, rcpts("d"), sink.Port, 0, true) })
	// One proxy per MX host, on 127.0.2.N, all on one port.
	port := 0
	for i := 1; i <= benchDomains; i++ {
		p, err := latencyproxy.Start(latencyproxy.Options{
			Listen: net.JoinHostPort(fmt.Sprintf("127.0.2.%d", i), strconv.Itoa(port)),
			Target: net.JoinHostPort(fmt.Sprintf("127.0.1.%d", i), strconv.Itoa(sink.Port)),
			Delay:  benchDelay,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		port = p.Port()
	}
	// With the default Concurrency (100 domains at once: all 100 here), and
	// with 32.
	b.Run("latency2ms-cold", func(b *testing.B) { run(b, rcpts("l"), port, 0, false) })
	b.Run("latency2ms-cold-concurrency32", func(b *testing.B) { run(b, rcpts("l"), port, 32, false) })
}

// --- A large message ------------------------------------------------------

// BenchmarkLarge25MiB: one 25 MiB message to 10 domains, each with its own
// MX server, with a new Mailer each time. peak-heap-MiB includes the
// caller's 25 MiB copy of the message; peak-over-base-MiB is what sending
// it added.
func BenchmarkLarge25MiB(b *testing.B) {
	const size = 25 << 20
	sink := benchFanOutSink(b, 10)
	msg := benchMessage(size)
	var to []string
	for d := 1; d <= 10; d++ {
		to = append(to, fmt.Sprintf("rcpt@d%03d.test", d))
	}
	b.ReportAllocs()
	b.SetBytes(size)
	var peak, over uint64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		m, err := New(Config{
			Hostname: "bench.test",
			Router:   Rules{{Domains: []string{"*"}, Via: Direct}},
			Resolver: DNSServer(sink.DNS),
			Direct:   DirectOptions{Port: sink.Port},
		})
		if err != nil {
			b.Fatal(err)
		}
		p, o := benchSendMeasured(b, m, benchFrom, to, msg)
		peak, over = max(peak, p), max(over, o)
		m.Close()
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(peak)/mib, "peak-heap-MiB")
	b.ReportMetric(float64(over)/mib, "peak-over-base-MiB")
	b.ReportMetric(float64(peak)/size, "peak/msg-size")
	runtime.KeepAlive(msg)
}
