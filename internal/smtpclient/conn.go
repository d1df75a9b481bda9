package smtpclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
)

// TLSMode says how a session gets encrypted.
type TLSMode uint8

const (
	// TLSOpportunistic issues STARTTLS when the server offers it and does not
	// verify the certificate (RFC 7435). A failed handshake is an error of
	// kind ErrTLSFailed, so the caller may redial with TLSNone. A STARTTLS
	// command refused with a reply leaves the session in plaintext.
	TLSOpportunistic TLSMode = iota
	// TLSRequired: STARTTLS must be offered and succeed with a verified
	// certificate; otherwise an error (ErrTLSUnavailable or ErrTLSFailed),
	// never plaintext.
	TLSRequired
	// TLSImplicit: TLS from the first byte (port 465, RFC 8314), verified.
	TLSImplicit
	// TLSNone never issues STARTTLS (the plaintext retry).
	TLSNone
)

func (m TLSMode) String() string {
	switch m {
	case TLSOpportunistic:
		return "opportunistic"
	case TLSRequired:
		return "required"
	case TLSImplicit:
		return "implicit"
	case TLSNone:
		return "none"
	}
	return "TLSMode(" + strconv.Itoa(int(m)) + ")"
}

// Timeouts bound each stage of a session. A zero field takes the RFC 5321
// §4.5.3.2 default (Connect, which the RFC does not cover, defaults to 30s
// as in Postfix). The deadline of every read and write is the smaller of the
// stage timeout and the context's deadline.
type Timeouts struct {
	Connect   time.Duration // TCP connect (and the implicit TLS handshake); default 30s
	Greeting  time.Duration // the 220 greeting; default 5m
	Mail      time.Duration // MAIL reply; default 5m
	Rcpt      time.Duration // each RCPT reply; default 5m
	DataInit  time.Duration // the 354 reply to DATA; default 2m
	DataBlock time.Duration // each write (flush) of body data, BDAT's chunk included; default 3m
	DataFinal time.Duration // the reply to the final "." or to BDAT LAST; default 10m
	Command   time.Duration // EHLO, STARTTLS (and its handshake), AUTH, RSET, NOOP, QUIT; default 5m
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Connect, 30*time.Second)
	def(&t.Greeting, 5*time.Minute)
	def(&t.Mail, 5*time.Minute)
	def(&t.Rcpt, 5*time.Minute)
	def(&t.DataInit, 2*time.Minute)
	def(&t.DataBlock, 3*time.Minute)
	def(&t.DataFinal, 10*time.Minute)
	def(&t.Command, 5*time.Minute)
	return t
}

// Dialer opens the TCP connection. *net.Dialer implements it.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Config configures one session. The zero value is usable: opportunistic
// TLS, no AUTH, EHLO "localhost", default dialer and timeouts.
type Config struct {
	LocalName string // EHLO name (validated by the caller); "" = "localhost"
	TLS       TLSMode
	// TLSConfig is used for TLSRequired, TLSImplicit and TLSOpportunistic.
	// It is cloned; ServerName is filled from the host when empty, and
	// TLSOpportunistic sets InsecureSkipVerify (and, when unset, MinVersion
	// TLS 1.0) on the clone. nil = system roots.
	TLSConfig *tls.Config
	// Auth, when non-nil, authenticates with this SASL client after TLS.
	Auth sasl.Client
	// Username and Password, when Auth is nil and either is set, choose a
	// mechanism from what the server advertises (PLAIN, then LOGIN, then
	// CRAM-MD5); see Credentials.
	Username, Password string
	// AuthFor, when Auth is nil, is asked at AUTH time for the SASL client,
	// given whether the session is encrypted and the mechanisms the server
	// advertises: for clients that decide by the session's real state, as
	// net/smtp's Auth does (its PlainAuth refuses an unencrypted session to
	// anything but localhost). It takes precedence over Username and
	// Password. The clear-text rule of AllowInsecureAuth is checked first,
	// so AuthFor never sees a session that rule refuses. An error from it
	// ends the session before any AUTH is written: an *Error wrapping
	// ErrAuthFailed and the cause, with Code 0, not Permanent.
	AuthFor func(tls bool, mechanisms []string) (sasl.Client, error)
	// AllowInsecureAuth permits AUTH without TLS, but only when the peer
	// address is loopback. Otherwise credentials are never sent in clear.
	AllowInsecureAuth bool
	// NoChunking keeps the DATA command even when the server offers
	// CHUNKING (RFC 3030), for servers whose BDAT misbehaves. See Send for
	// when BDAT is used otherwise.
	NoChunking bool
	// SplitAfterIdle: a session idle at least this long (since Dial or
	// its last transaction) sends MAIL and RCPT and reads their replies
	// before BDAT's chunk, instead of all in one write, so that a server
	// that closed it meanwhile is seen before any data could have been
	// accepted (see the package doc). 0 = 1s; negative = every
	// transaction (tests).
	SplitAfterIdle time.Duration
	Dialer         Dialer // nil = &net.Dialer{}
	Timeouts       Timeouts
}

func (cfg *Config) dialer() Dialer {
	if cfg.Dialer != nil {
		return cfg.Dialer
	}
	return &net.Dialer{}
}

func (cfg *Config) localName() string {
	if cfg.LocalName != "" {
		return cfg.LocalName
	}
	return "localhost"
}

// Conn is one SMTP session. It is not safe for concurrent use: one
// goroutine at a time (a pool hands it out).
type Conn struct {
	raw  net.Conn // the TCP connection (deadlines and Close go here)
	nc   net.Conn // raw, or the *tls.Conn over it
	r    *bufio.Reader
	w    *bufio.Writer
	host string
	to   Timeouts

	ext      map[string]string // EHLO keywords, upper-case → parameters
	offers   offers            // what of ext every message needs, see setExtensions
	helo     bool              // the server only spoke HELO
	isTLS    bool
	tlsState tls.ConnectionState
	usable   bool
	closed   bool
	tcp      bool // raw is a *net.TCPConn
	// drained: the last read from the connection, since the last write,
	// returned less than it asked for, so the socket had nothing more
	// queued at that moment (see quietAfterReply).
	drained  bool
	limitRcp int  // LIMITS RCPTMAX (RFC 9422); 0 = none
	noChunk  bool // Config.NoChunking

	splitAfterIdle time.Duration // Config.SplitAfterIdle with its default
	lastUse        time.Time     // end of Dial or of the last Send

	// Cancellation and deadlines of the current operation.
	mu        sync.Mutex
	cancelled bool
	ctxDL     time.Time // the operation context's deadline, zero = none
	wTimeout  time.Duration
	rTimeout  time.Duration // the read deadline connReader sets
	// The deadlines last set on raw (pastDeadline after abort), so that
	// one not worth moving is not set again: see setReadDeadline.
	rdl, wdl time.Time
	opCtx    context.Context
	stop     func() bool
	watcher  Watcher // the operation context's, when it is one
	watchTok int
	abortFn  func()

	scratch []byte     // reply assembly
	texts   replyTexts // recent reply texts, shared rather than copied again
	lastRep Reply      // the last final reply and its String, see replyString
	lastStr string
	copyBuf []byte // body copy buffer for readers without WriteTo
	dw      dotWriter
	chunkR  chunkReader // BDAT body reader, kept here so it does not allocate
	probe   [1]byte     // checks that a BDAT body ends where Tx.Size says; peekSocket's buffer
	peek    peekState
	rio     rawIO // plaintext reads and writes without the scheduler's syscall bracket
	accBuf  []int // reused by transactions
	pendBuf []int // reused by Send

	ignoreLimits bool // tests: exercise the 452 path even when LIMITS is advertised
}

// connWriter is what the bufio.Writer flushes into: it refreshes the write
// deadline before every write, so each flush (a body block included) gets
// the current stage's timeout.
type connWriter struct{ c *Conn }

func (w connWriter) Write(p []byte) (int, error) {
	w.c.setWriteDeadline(w.c.wTimeout)
	w.c.drained = false // replies to what goes out now come after any read so far
	if w.c.rio.rc != nil && !w.c.isTLS {
		return w.c.rawWrite(p)
	}
	return w.c.nc.Write(p)
}

// connReader is what the bufio.Reader fills from: it sets the read
// deadline (the timeout of the reply awaited, rTimeout) before every read
// from the connection, so that a reply already buffered costs none.
type connReader struct{ c *Conn }

func (r connReader) Read(p []byte) (int, error) {
	r.c.setReadDeadline(r.c.rTimeout)
	var n int
	var err error
	if r.c.rio.rc != nil && !r.c.isTLS {
		n, err = r.c.rawRead(p)
	} else {
		n, err = r.c.nc.Read(p)
	}
	// See quietAfterReply. Only a plaintext TCP connection: a TLS read
	// returns one record, whatever else is queued.
	r.c.drained = shortReadDrains && n < len(p) && err == nil && r.c.tcp && !r.c.isTLS
	return n, err
}

var pastDeadline = time.Unix(1, 0)

// writeBufSize is the size of one flush: a body is written (and each write
// given the DataBlock timeout) in blocks of this size.
const writeBufSize = 8192

func newConn(raw net.Conn, host string, to Timeouts) *Conn {
	c := &Conn{raw: raw, nc: raw, host: host, to: to, usable: true}
	_, c.tcp = raw.(*net.TCPConn)
	c.initRawIO()
	c.r = bufio.NewReaderSize(connReader{c}, readBufSize)
	c.w = bufio.NewWriterSize(connWriter{c}, writeBufSize)
	c.abortFn = c.abort
	c.scratch = make([]byte, 0, 256)
	return c
}

// Watcher is a context that interrupts the operations bound to it by
// itself, without context.AfterFunc: mailroute's per-Send context, whose
// cancellation by Mailer.Close would otherwise need a context derived for
// every Send and, on it, an AfterFunc registration for every operation
// (six allocations and two mutexes per message where this costs none).
//
// Watch arranges for abort to be called once the context is done, and
// returns a token for Unwatch, which undoes it: after Unwatch returns,
// abort is not called for that registration any more. abort may be called
// from any goroutine, more than once, and before Watch returns.
type Watcher interface {
	context.Context
	Watch(abort func()) (token int)
	Unwatch(token int)
}

// abort runs (from context.AfterFunc or a Watcher) when the operation's
// context is done: a past deadline makes any blocked read or write return
// at once.
func (c *Conn) abort() {
	c.mu.Lock()
	c.cancelled = true
	c.raw.SetDeadline(pastDeadline)
	c.rdl, c.wdl = pastDeadline, pastDeadline
	c.mu.Unlock()
}

// begin starts an operation bound to ctx; end must follow.
func (c *Conn) begin(ctx context.Context) {
	dl, _ := ctx.Deadline()
	c.mu.Lock()
	c.cancelled = false
	c.ctxDL = dl
	c.mu.Unlock()
	c.opCtx = ctx
	if w, ok := ctx.(Watcher); ok {
		c.watcher, c.watchTok = w, w.Watch(c.abortFn)
	} else if ctx.Done() != nil {
		c.stop = context.AfterFunc(ctx, c.abortFn)
	}
}

func (c *Conn) end() {
	if c.watcher != nil {
		c.watcher.Unwatch(c.watchTok)
		c.watcher = nil
	}
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
	c.opCtx = nil
	c.lastUse = time.Now() // see splitDue
}

func (c *Conn) deadline(d time.Duration) time.Time {
	if c.cancelled {
		return pastDeadline
	}
	t := time.Now().Add(d)
	if !c.ctxDL.IsZero() && c.ctxDL.Before(t) {
		t = c.ctxDL
	}
	return t
}

// setReadDeadline gives the next read the deadline d from now (or the
// context's, when earlier). A deadline already set that is no later than
// that and earlier by at most d/1024 (300 ms of the 5-minute stage
// timeouts, 50 µs of the 50 ms TLS settle) is kept as it is: the read is
// still bounded by its stage timeout, never later, while messages sent
// back to back re-arm the socket's timer about once per 300 ms instead of
// for every read and write.
func (c *Conn) setReadDeadline(d time.Duration) {
	c.mu.Lock()
	if t := c.deadline(d); !closeEnough(c.rdl, t, d) {
		c.raw.SetReadDeadline(t)
		c.rdl = t
	}
	c.mu.Unlock()
}

// setWriteDeadline is setReadDeadline for writes.
func (c *Conn) setWriteDeadline(d time.Duration) {
	c.mu.Lock()
	if t := c.deadline(d); !closeEnough(c.wdl, t, d) {
		c.raw.SetWriteDeadline(t)
		c.wdl = t
	}
	c.mu.Unlock()
}

func (c *Conn) setDeadline(d time.Duration) {
	c.mu.Lock()
	t := c.deadline(d)
	c.raw.SetDeadline(t)
	c.rdl, c.wdl = t, t
	c.mu.Unlock()
}

// closeEnough reports whether the deadline set, have, may stand for want,
// the one for a timeout of d: no later, and earlier by at most d/1024.
func closeEnough(have, want time.Time, d time.Duration) bool {
	return !have.After(want) && want.Sub(have) <= d>>10
}

// writeCmd buffers "verb arg\r\n" without flushing.
func (c *Conn) writeCmd(parts ...string) {
	for _, p := range parts {
		c.w.WriteString(p)
	}
	c.w.WriteString("\r\n")
}

func (c *Conn) flush(cmd string, timeout time.Duration) error {
	c.wTimeout = timeout
	if err := c.w.Flush(); err != nil {
		return c.ioError(cmd, err)
	}
	return nil
}

// readReply reads one reply with the given timeout. Network and protocol
// errors make the connection unusable; so does a 421 reply (the server is
// closing the channel).
func (c *Conn) readReply(cmd string, timeout time.Duration) (Reply, error) {
	c.rTimeout = timeout // set by connReader if the reply is not buffered
	rep, buf, err := readReply(c.r, c.scratch, &c.texts)
	c.scratch = buf[:0]
	if err != nil {
		return Reply{}, c.ioError(cmd, err)
	}
	if rep.Code == 421 {
		c.usable = false
	}
	return rep, nil
}

// readReplyLost is readReply for a reply awaited after the end of the
// message data: when lost is set, the message may have been accepted, so a
// reply that cannot be read is ErrConnectionLost with Command ".".
func (c *Conn) readReplyLost(cmd string, timeout time.Duration, lost bool) (Reply, error) {
	if !lost {
		return c.readReply(cmd, timeout)
	}
	c.rTimeout = timeout
	rep, buf, err := readReply(c.r, c.scratch, &c.texts)
	c.scratch = buf[:0]
	if err != nil {
		return Reply{}, c.ioError(".", err, ErrConnectionLost)
	}
	if rep.Code == 421 {
		c.usable = false
	}
	return rep, nil
}

// cmd writes one command, flushes it and reads its reply. Nothing may
// follow that reply: a line more would be taken as the answer to the next
// command (see ErrOutOfStep).
func (c *Conn) cmd(name string, timeout time.Duration, parts ...string) (Reply, error) {
	c.writeCmd(parts...)
	if err := c.flush(name, timeout); err != nil {
		return Reply{}, err
	}
	rep, err := c.readReply(name, timeout)
	if err == nil && c.r.Buffered() > 0 {
		return Reply{}, c.ioError(name, protocolErrorf("bytes after the reply to %s", name), ErrOutOfStep)
	}
	return rep, err
}

// unexpected builds the error for a reply of the wrong class. A 1xx-3xx
// reply where 2xx was due is a protocol violation: the conn is unusable.
func (c *Conn) unexpected(cmd string, rep Reply, sentinel error) *Error {
	if rep.Code < 400 {
		c.usable = false
		if sentinel == nil {
			sentinel = ErrProtocol
		}
	}
	return c.replyError(cmd, rep, sentinel)
}

// Extension reports whether the server advertised the EHLO keyword name
// (case-insensitive) and returns its parameters.
func (c *Conn) Extension(name string) (param string, ok bool) {
	param, ok = c.ext[strings.ToUpper(name)]
	return param, ok
}

// MaxSize returns the SIZE the server advertised (RFC 1870); 0 = none.
func (c *Conn) MaxSize() int64 { return c.offers.maxSize }

// TLS returns the TLS state when the session is encrypted.
func (c *Conn) TLS() (tls.ConnectionState, bool) { return c.tlsState, c.isTLS }

// IsTLS reports whether the session is encrypted: TLS without copying the
// state, for the checks made on every message.
func (c *Conn) IsTLS() bool { return c.isTLS }

// Host returns the server's name as given to Dial.
func (c *Conn) Host() string { return c.host }

// Usable is false after a protocol or I/O error, a 421 reply, or Close:
// such a connection must not be reused.
func (c *Conn) Usable() bool { return c.usable }

// simple runs a command that expects 250 (RSET, NOOP).
func (c *Conn) simple(ctx context.Context, name string) error {
	if !c.usable {
		return c.localError(name, false, ErrUnusable, "")
	}
	if err := ctx.Err(); err != nil {
		return &Error{Command: name, Host: c.host, Err: err}
	}
	c.begin(ctx)
	defer c.end()
	rep, err := c.cmd(name, c.to.Command, name)
	if err != nil {
		return err
	}
	if !rep.Positive() {
		c.usable = false
		return c.unexpected(name, rep, nil)
	}
	return nil
}

// Reset sends RSET (and nothing else: no new EHLO). A failure leaves the
// connection unusable.
func (c *Conn) Reset(ctx context.Context) error { return c.simple(ctx, "RSET") }

// Noop sends NOOP, to check that a pooled connection is alive.
func (c *Conn) Noop(ctx context.Context) error { return c.simple(ctx, "NOOP") }

// Quit sends QUIT, reads the reply and closes the connection. The
// connection is closed whatever happens.
func (c *Conn) Quit(ctx context.Context) error {
	defer c.Close()
	if !c.usable {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return &Error{Command: "QUIT", Host: c.host, Err: err}
	}
	c.begin(ctx)
	defer c.end()
	rep, err := c.cmd("QUIT", c.to.Command, "QUIT")
	if err != nil {
		return err
	}
	if rep.Code != 221 && !rep.Positive() {
		return c.unexpected("QUIT", rep, nil)
	}
	return nil
}

// Close closes the connection without QUIT. It is safe to call twice.
func (c *Conn) Close() error {
	c.usable = false
	if c.closed {
		return nil
	}
	c.closed = true
	return c.raw.Close()
}

// peerLoopback reports whether the peer's address is a loopback address.
func (c *Conn) peerLoopback() bool {
	a, ok := c.raw.RemoteAddr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}
