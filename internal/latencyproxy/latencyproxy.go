// Package latencyproxy is a TCP proxy on loopback that adds a fixed delay
// to every chunk of data in each direction, as a long link between a client
// and a server would, and counts the round trips each connection costs.
//
// Each accepted connection gets one goroutine per direction reading chunks
// and one writing them out of a timed queue: a chunk read at t is written at
// t+Delay, in order, so a burst of writes is delayed once, not once per
// chunk, and throughput is not limited by the delay. The upstream server is
// dialled 3×Delay after the client connects: SYN, SYN-ACK and ACK cross the
// link before a real server's accept returns, so the server's greeting
// reaches the client 2 round trips after connect, as it would.
//
// # Counting
//
// The proxy sees the conversation as a sequence of chunks, each either from
// the client (C, counted when the proxy reads it) or from the server (S,
// counted when the proxy hands it to the client, just before writing it).
// Consecutive chunks in one direction form a run. Per connection:
//
//   - Turns is the number of times the client sends after having received
//     something from the server since its own last send: the C runs that
//     follow an S run. EHLO after the greeting is the first turn.
//   - RoundTrips is 1 for opening the connection (the TCP handshake) plus the
//     number of S runs: every time the client waits for the server — the
//     greeting, and each answer to what the client sent. It is what the
//     conversation costs in units of the link's round-trip time. For a
//     conversation that ends with a server reply (QUIT's 221, or a reply the
//     client reads before leaving the connection idle), RoundTrips equals
//     Turns + 2.
//
// A pipelined group (MAIL, RCPT, DATA in one write) is one C run however
// the kernel splits it, and the server's replies to it one S run however
// the server writes them, so the counts do not depend on buffering. They
// are exact for clients that send only after reading what they wait for,
// which is how SMTP clients behave in lock-step (RFC 5321) and with
// PIPELINING (RFC 2920, where the groups end with a command that waits).
// Since an S chunk is counted before it is written, a client cannot send an
// answer to it before it is counted.
package latencyproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Options configures a Proxy.
type Options struct {
	// Listen is the address to listen on; default "127.0.0.1:0".
	Listen string
	// Target is the server's address ("host:port"); required.
	Target string
	// Delay is added to every chunk in each direction; the round-trip time
	// of the simulated link is 2×Delay. 0 forwards at once but still counts.
	Delay time.Duration
}

// Stats are one connection's counts.
type Stats struct {
	// Turns: how often the client sent after having received something
	// since its last send.
	Turns int
	// RoundTrips: 1 for the connection's opening plus one per run of
	// server data that follows client data (or opens the conversation).
	RoundTrips int
	// ClientBytes and ServerBytes count the octets forwarded each way.
	ClientBytes, ServerBytes int64
	// Open is true until both directions have ended.
	Open bool
}

// Proxy is a running latency proxy. Its methods are safe for concurrent use.
type Proxy struct {
	// Addr is the address clients connect to.
	Addr string

	opts Options
	ln   net.Listener
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  []*conn
	closed bool
}

// Start listens and starts proxying to opts.Target. Close stops it.
func Start(opts Options) (*Proxy, error) {
	if opts.Target == "" {
		return nil, errors.New("latencyproxy: no Target")
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), opts: opts, ln: ln}
	p.wg.Go(p.accept)
	return p, nil
}

func (p *Proxy) accept() {
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			return
		}
		c := &conn{p: p, client: nc, open: true}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			nc.Close()
			return
		}
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.wg.Go(c.run)
	}
}

// Close stops listening, ends every connection and waits for the proxy's
// goroutines. Calling it twice is fine.
func (p *Proxy) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	if already {
		return nil
	}
	err := p.ln.Close()
	for _, c := range conns {
		c.closeBoth()
	}
	p.wg.Wait()
	return err
}

// Conns returns the counts of every connection accepted so far, in accept
// order.
func (p *Proxy) Conns() []Stats {
	p.mu.Lock()
	conns := p.conns
	p.mu.Unlock()
	out := make([]Stats, len(conns))
	for i, c := range conns {
		out[i] = c.stats()
	}
	return out
}

// Connections returns how many connections the proxy has accepted.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// RoundTrips returns the sum of RoundTrips over every connection.
func (p *Proxy) RoundTrips() int {
	n := 0
	for _, s := range p.Conns() {
		n += s.RoundTrips
	}
	return n
}

// Turns returns the sum of Turns over every connection.
func (p *Proxy) Turns() int {
	n := 0
	for _, s := range p.Conns() {
		n += s.Turns
	}
	return n
}

// conn is one proxied connection.
type conn struct {
	p      *Proxy
	client net.Conn

	mu       sync.Mutex
	server   net.Conn // nil until dialled
	gone     bool     // closeBoth was called
	last     byte     // direction of the last chunk: 0, 'C' or 'S'
	heard    bool     // the client received server data since its last send
	turns    int
	sRuns    int
	cBytes   int64
	sBytes   int64
	open     bool
	upDone   bool
	downDone bool
}

func (c *conn) stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Turns: c.turns, RoundTrips: 1 + c.sRuns, ClientBytes: c.cBytes, ServerBytes: c.sBytes, Open: c.open}
}

func (c *conn) run() {
	d := c.p.opts.Delay
	if d > 0 {
		// The TCP handshake crosses the link before the server's accept
		// returns: SYN, SYN-ACK, ACK.
		t := time.NewTimer(3 * d)
		<-t.C
	}
	server, err := net.Dial("tcp", c.p.opts.Target)
	c.mu.Lock()
	if err != nil || c.gone {
		c.open = false
		c.mu.Unlock()
		if server != nil {
			server.Close()
		}
		c.client.Close()
		return
	}
	c.server = server
	c.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() { c.pipe(c.client, server, 'C') })
	wg.Go(func() { c.pipe(server, c.client, 'S') })
	wg.Wait()
	c.mu.Lock()
	c.open = false
	c.mu.Unlock()
}

// closeBoth ends both sides at once (Proxy.Close, or one side failed).
func (c *conn) closeBoth() {
	c.mu.Lock()
	c.gone = true
	server := c.server
	c.mu.Unlock()
	c.client.Close()
	if server != nil {
		server.Close()
	}
}

// chunk is data waiting in a direction's timed queue. A nil buf marks the
// end of the stream (the sender half-closed).
type chunk struct {
	due time.Time
	buf *[]byte
	n   int
}

const chunkSize = 32 << 10

// queueLen bounds the chunks in flight per direction (queueLen×chunkSize
// octets), so a slow reader applies back-pressure rather than filling memory.
const queueLen = 256

var bufPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// pipe forwards src to dst, dir being the direction ('C' client→server,
// 'S' server→client): a reader stamps each chunk with its due time, the
// writer (this goroutine) writes it then.
func (c *conn) pipe(src, dst net.Conn, dir byte) {
	q := make(chan chunk, queueLen)
	var readErr error // set before q is closed
	go func() {
		defer close(q)
		for {
			bp := bufPool.Get().(*[]byte)
			n, err := src.Read(*bp)
			if n > 0 {
				if dir == 'C' {
					c.mark('C', n)
				}
				q <- chunk{due: time.Now().Add(c.p.opts.Delay), buf: bp, n: n}
			} else {
				bufPool.Put(bp)
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					q <- chunk{due: time.Now().Add(c.p.opts.Delay)}
				} else {
					readErr = err
				}
				return
			}
		}
	}()

	var timer *time.Timer
	failed := false
	for ch := range q {
		if failed {
			if ch.buf != nil {
				bufPool.Put(ch.buf)
			}
			continue
		}
		if wait := time.Until(ch.due); wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			<-timer.C
		}
		if ch.buf == nil {
			// End of stream: pass the half-close on.
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			} else {
				dst.Close()
			}
			continue
		}
		if dir == 'S' {
			c.mark('S', ch.n)
		}
		_, err := dst.Write((*ch.buf)[:ch.n])
		bufPool.Put(ch.buf)
		if err != nil {
			failed = true
			c.closeBoth() // unblocks the reader, which then closes q
		}
	}
	if failed {
		return
	}
	if readErr != nil {
		// A reset or a closed socket, not a half-close: nothing more can
		// flow either way.
		c.closeBoth()
		return
	}
	// src half-closed: when the other direction has ended too, the
	// connection is over.
	c.mu.Lock()
	if dir == 'C' {
		c.upDone = true
	} else {
		c.downDone = true
	}
	both := c.upDone && c.downDone
	c.mu.Unlock()
	if both {
		c.closeBoth()
	}
}

// mark counts a chunk of n octets in direction dir.
func (c *conn) mark(dir byte, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch dir {
	case 'C':
		c.cBytes += int64(n)
		if c.heard {
			c.turns++
			c.heard = false
		}
	case 'S':
		c.sBytes += int64(n)
		if c.last != 'S' {
			c.sRuns++
		}
		c.heard = true
	}
	c.last = dir
}

// Port returns the port the proxy listens on.
func (p *Proxy) Port() int {
	return p.ln.Addr().(*net.TCPAddr).Port
}
