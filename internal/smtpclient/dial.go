package smtpclient

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"
)

// Dial connects to addr ("ip:port"), whose name for TLS verification and
// errors is host (empty: the host part of addr), and runs the session up to
// the point where mail can be sent:
//
//  1. connect (Timeouts.Connect), and for TLSImplicit the TLS handshake;
//  2. the greeting: anything but 220 is an *Error with Command "greeting"
//     (421 and other 4xx temporary, 5xx permanent);
//  3. EHLO, falling back to HELO when EHLO gets 500 or 502;
//  4. STARTTLS per cfg.TLS, then EHLO again;
//  5. AUTH when cfg.Auth or cfg.Username/Password is set (after TLS only).
//
// Every read and write has a deadline, the smaller of the stage timeout and
// ctx's deadline; cancelling ctx aborts a blocked read or write at once. On
// error the connection is closed and the *Error says which step failed.
func Dial(ctx context.Context, addr, host string, cfg *Config) (*Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if host == "" {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		} else {
			host = addr
		}
	}
	to := cfg.Timeouts.withDefaults()
	if err := ctx.Err(); err != nil {
		return nil, &Error{Command: "connect", Host: host, Err: err}
	}
	dctx, cancel := context.WithTimeout(ctx, to.Connect)
	raw, err := cfg.dialer().DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		errs := []error{err}
		if cerr := ctx.Err(); cerr != nil {
			errs = append(errs, cerr)
		}
		return nil, &Error{Command: "connect", Host: host, Err: joinErrs(errs)}
	}
	c := newConn(raw, host, to)
	c.noChunk = cfg.NoChunking
	c.splitAfterIdle = cfg.SplitAfterIdle
	if c.splitAfterIdle == 0 {
		c.splitAfterIdle = defaultSplitAfterIdle
	}
	c.begin(ctx)
	err = c.open(ctx, cfg)
	c.end()
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) open(ctx context.Context, cfg *Config) error {
	if cfg.TLS == TLSImplicit {
		if err := c.handshake(ctx, "connect", c.tlsConfig(cfg, false), c.to.Connect); err != nil {
			return err
		}
	}
	rep, err := c.readReply("greeting", c.to.Greeting)
	if err != nil {
		return err
	}
	if c.r.Buffered() > 0 { // a line more would pass for EHLO's reply
		return c.ioError("greeting", protocolErrorf("bytes after the greeting"), ErrOutOfStep)
	}
	if rep.Code != 220 {
		return c.unexpected("greeting", rep, nil)
	}
	if err := c.hello(cfg.localName()); err != nil {
		return err
	}
	switch cfg.TLS {
	case TLSOpportunistic, TLSRequired:
		if err := c.startTLS(ctx, cfg); err != nil {
			return err
		}
	}
	return c.authenticate(cfg)
}

// hello sends EHLO (HELO when EHLO is not recognised) and records the
// advertised extensions.
func (c *Conn) hello(name string) error {
	rep, err := c.cmd("EHLO", c.to.Command, "EHLO ", name)
	if err != nil {
		return err
	}
	if rep.Code == 500 || rep.Code == 502 {
		rep, err = c.cmd("HELO", c.to.Command, "HELO ", name)
		if err != nil {
			return err
		}
		if rep.Code != 250 {
			return c.unexpected("HELO", rep, nil)
		}
		c.helo = true
		c.setExtensions(map[string]string{})
		return nil
	}
	if rep.Code != 250 {
		return c.unexpected("EHLO", rep, nil)
	}
	c.helo = false
	c.setExtensions(parseEHLO(rep))
	return nil
}

// setExtensions records what EHLO advertised, and apart from the map the
// few facts every message asks for, so that a Send costs no map lookup
// and no SIZE parse.
func (c *Conn) setExtensions(ext map[string]string) {
	c.ext = ext
	c.limitRcp = rcptMax(ext["LIMITS"])
	has := func(k string) bool { _, ok := ext[k]; return ok }
	c.offers = offers{
		pipelining: has("PIPELINING"),
		chunking:   has("CHUNKING"),
		size:       has("SIZE"),
		eightBit:   has("8BITMIME"),
		smtputf8:   has("SMTPUTF8"),
		maxSize:    parseMaxSize(ext),
	}
}

// offers is what the server advertised that each message needs.
type offers struct {
	pipelining, chunking, size, eightBit, smtputf8 bool
	maxSize                                        int64 // SIZE's parameter; 0 = none
}

// parseMaxSize reads the parameter of SIZE: 0 when absent or not a
// number.
func parseMaxSize(ext map[string]string) int64 {
	p, ok := ext["SIZE"]
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// parseEHLO maps each keyword line after the first (the server's name) to
// its parameters, keyed upper-case. The old "AUTH=PLAIN LOGIN" form is
// folded into AUTH.
func parseEHLO(rep Reply) map[string]string {
	lines := rep.Lines()
	ext := make(map[string]string, len(lines))
	for i, l := range lines {
		if i == 0 {
			continue
		}
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		kw, param, _ := strings.Cut(l, " ")
		kw = strings.ToUpper(kw)
		if strings.HasPrefix(kw, "AUTH=") {
			if _, seen := ext["AUTH"]; seen {
				continue // the RFC 4954 form wins
			}
			kw, param = "AUTH", l[len("AUTH="):]
		}
		ext[kw] = strings.TrimSpace(param)
	}
	return ext
}

// rcptMax extracts RCPTMAX from a LIMITS parameter (RFC 9422).
func rcptMax(limits string) int {
	for _, f := range strings.Fields(limits) {
		k, v, ok := strings.Cut(f, "=")
		if ok && strings.EqualFold(k, "RCPTMAX") {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

func (c *Conn) tlsConfig(cfg *Config, insecure bool) *tls.Config {
	var conf *tls.Config
	if cfg.TLSConfig != nil {
		conf = cfg.TLSConfig.Clone()
	} else {
		conf = &tls.Config{}
	}
	if conf.ServerName == "" {
		conf.ServerName = strings.TrimSuffix(c.host, ".")
	}
	if insecure {
		// Opportunistic: any encryption beats plaintext (RFC 7435), so
		// neither the certificate nor a modern protocol version is demanded.
		conf.InsecureSkipVerify = true
		if conf.MinVersion == 0 {
			conf.MinVersion = tls.VersionTLS10
		}
	}
	return conf
}

// handshake runs a TLS client handshake over the raw connection and
// switches the session to it. Any failure wraps ErrTLSFailed.
func (c *Conn) handshake(ctx context.Context, cmd string, conf *tls.Config, timeout time.Duration) error {
	tc := tls.Client(c.tlsTransport(), conf)
	c.setDeadline(timeout)
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.ioError(cmd, err, ErrTLSFailed)
	}
	c.nc = tc
	c.r.Reset(connReader{c}) // reads now go through TLS; nothing plaintext is kept
	c.isTLS = true
	c.tlsState = tc.ConnectionState()
	return nil
}

// startTLS applies TLSOpportunistic or TLSRequired after the first EHLO.
func (c *Conn) startTLS(ctx context.Context, cfg *Config) error {
	required := cfg.TLS == TLSRequired
	if _, ok := c.ext["STARTTLS"]; !ok {
		if !required {
			return nil
		}
		msg := "server does not offer STARTTLS"
		if c.helo {
			msg = "server does not support EHLO, so no STARTTLS"
		}
		c.quitQuietly()
		return c.localError("STARTTLS", false, ErrTLSUnavailable, msg)
	}
	rep, err := c.cmd("STARTTLS", c.to.Command, "STARTTLS")
	if err != nil {
		return err
	}
	if rep.Code != 220 {
		if rep.Code < 400 {
			return c.unexpected("STARTTLS", rep, nil)
		}
		if required || rep.Code == 421 {
			e := c.replyError("STARTTLS", rep, ErrTLSUnavailable)
			e.Permanent = false
			c.usable = false
			return e
		}
		return nil // opportunistic: the session goes on in plaintext
	}
	// Anything the server sent after its 220 was sent before TLS and must
	// not be read as if it came through the encrypted channel
	// (CVE-2011-0411-style command injection).
	// Whether the injected bytes arrive with the 220 or after it, the
	// fault is reported the same way (a protocol error, so no plaintext
	// retry): quiet sees what has arrived, the handshake what comes later.
	if err := c.quiet(); errors.Is(err, ErrOutOfStep) {
		return c.ioError("STARTTLS", protocolErrorf("plaintext after the STARTTLS reply"))
	}
	if err := c.handshake(ctx, "STARTTLS", c.tlsConfig(cfg, !required), c.to.Command); err != nil {
		if injectedPlaintext(err) {
			return c.ioError("STARTTLS", protocolErrorf("plaintext after the STARTTLS reply"))
		}
		return err
	}
	return c.hello(cfg.localName())
}

// quitQuietly sends QUIT on a best-effort basis before Dial gives up.
func (c *Conn) quitQuietly() {
	c.writeCmd("QUIT")
	if c.flush("QUIT", c.to.Command) == nil {
		c.readReply("QUIT", c.to.Command)
	}
	c.usable = false
}
