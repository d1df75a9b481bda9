package mailroute

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// Pool defaults for the smarthost.
const (
	defaultMaxIdle     = 2
	defaultIdleTimeout = 60 * time.Second
)

// smarthost is the relay with its pool of idle, authenticated sessions. A
// session is used by one transaction at a time: taken from the pool, used,
// put back. After a successful transaction it goes back as it is, without
// RSET (the server's state is already reset by the end of data).
type smarthost struct {
	host        string // for TLS verification and errors
	addr        string
	cfg         smtpclient.Config
	maxIdle     int
	idleTimeout time.Duration
	now         func() time.Time

	mu     sync.Mutex
	idle   []idleConn // most recently used last
	closed bool
}

type idleConn struct {
	c     *smtpclient.Conn
	since time.Time
}

func newSmarthost(r *Relay, localName string) *smarthost {
	host, _, _ := net.SplitHostPort(r.Addr) // checked in New
	s := &smarthost{
		host:        host,
		addr:        r.Addr,
		maxIdle:     r.MaxIdle,
		idleTimeout: r.IdleTimeout,
		now:         time.Now,
		cfg: smtpclient.Config{
			LocalName: localName,
			TLSConfig: r.TLSConfig,
			Auth:      r.Auth,
			Username:  r.Username,
			Password:  r.Password,
			Timeouts:  r.Timeouts.client(),
		},
	}
	switch {
	case r.InsecurePlaintextLoopback:
		// A local relay: encrypt if it offers STARTTLS, else go plain;
		// credentials may then cross loopback in clear (checked in New).
		s.cfg.TLS = smtpclient.TLSOpportunistic
		s.cfg.AllowInsecureAuth = true
	case r.implicitTLS():
		s.cfg.TLS = smtpclient.TLSImplicit
	default:
		s.cfg.TLS = smtpclient.TLSRequired
	}
	if s.maxIdle == 0 {
		s.maxIdle = defaultMaxIdle
	}
	if s.idleTimeout <= 0 {
		s.idleTimeout = defaultIdleTimeout
	}
	return s
}

// get returns a session: an idle one when there is one (pooled=true), else
// a new one.
func (s *smarthost) get(ctx context.Context) (c *smtpclient.Conn, pooled bool, err *Error) {
	now := s.now()
	var stale []*smtpclient.Conn
	s.mu.Lock()
	for len(s.idle) > 0 && c == nil {
		ic := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if now.Sub(ic.since) >= s.idleTimeout || !ic.c.Usable() {
			stale = append(stale, ic.c)
			continue
		}
		c = ic.c
	}
	s.mu.Unlock()
	for _, sc := range stale {
		sc.Quit(ctx)
	}
	if c != nil {
		return c, true, nil
	}
	c, err = s.dial(ctx)
	return c, false, err
}

// dial opens and authenticates a new session.
func (s *smarthost) dial(ctx context.Context) (*smtpclient.Conn, *Error) {
	c, err := smtpclient.Dial(ctx, s.addr, s.host, &s.cfg)
	if err != nil {
		e := smarthostError(err)
		if e.Host == "" {
			e.Host = s.host
		}
		return nil, e
	}
	return c, nil
}

// put returns a session to the pool, or closes it when it is unusable, the
// pool is full or closed.
func (s *smarthost) put(c *smtpclient.Conn) {
	if !c.Usable() {
		c.Close()
		return
	}
	s.mu.Lock()
	if s.closed || s.maxIdle < 0 || len(s.idle) >= s.maxIdle {
		s.mu.Unlock()
		c.Quit(context.Background())
		return
	}
	s.idle = append(s.idle, idleConn{c: c, since: s.now()})
	s.mu.Unlock()
}

// close ends every idle session with QUIT; sessions in use are closed when
// they are put back.
func (s *smarthost) close(ctx context.Context) {
	s.mu.Lock()
	idle := s.idle
	s.idle, s.closed = nil, true
	s.mu.Unlock()
	for _, ic := range idle {
		ic.c.Quit(ctx)
	}
}

// smarthostError classifies a relay failure: a TLS or authentication
// problem is the user's configuration to fix, so it wraps ErrSmarthostTLS
// or ErrSmarthostAuth and is never permanent (the mail is kept, not
// bounced). A 454 to AUTH is transient (maddy answers a wrong password so).
func smarthostError(err error) *Error {
	var ce *smtpclient.Error
	errors.As(err, &ce)
	switch {
	case errors.Is(err, smtpclient.ErrTLSFailed), errors.Is(err, smtpclient.ErrTLSUnavailable):
		e := fromClient(err, ErrSmarthostTLS)
		e.Permanent = false
		return e
	case errors.Is(err, smtpclient.ErrAuthFailed) && ce != nil && ce.Code >= 400 && ce.Code < 500:
		return fromClient(err, nil)
	case errors.Is(err, smtpclient.ErrAuthFailed), errors.Is(err, smtpclient.ErrNoAuthMechanism),
		errors.Is(err, smtpclient.ErrAuthRefusedInsecure),
		ce != nil && ce.Code == 530: // 5.7.0 authentication required
		e := fromClient(err, ErrSmarthostAuth)
		e.Permanent = false
		return e
	}
	return fromClient(err, nil)
}

// deliverSmarthost hands a job to the relay, ≤100 recipients per
// transaction. A pooled session that turns out dead before the server
// accepted anything is replaced once, transparently.
func (m *Mailer) deliverSmarthost(ctx context.Context, j *job) {
	if j.relay == nil {
		j.failAll(&Error{Command: "route", Err: ErrNoSmarthost}, "")
		m.logAttempt(j, Smarthost, "", j.pending(), &Error{Err: ErrNoSmarthost}, 0)
		return
	}
	pending := j.pending()
	for len(pending) > 0 {
		n := min(len(pending), maxRcptsPerTx)
		m.smarthostBatch(ctx, j, pending[:n])
		pending = pending[n:]
	}
}

func (m *Mailer) smarthostBatch(ctx context.Context, j *job, batch []int) {
	s := j.relay
	start := time.Now()
	c, pooled, e := s.get(ctx)
	if e != nil {
		j.fail(batch, e, s.host)
		m.logAttempt(j, Smarthost, s.host, batch, e, time.Since(start))
		return
	}
	res, err := c.Send(ctx, j.tx(batch))
	if err != nil && pooled && deadBeforeAccepting(err) {
		c.Close()
		if c, e = s.dial(ctx); e != nil {
			j.fail(batch, e, s.host)
			m.logAttempt(j, Smarthost, s.host, batch, e, time.Since(start))
			return
		}
		res, err = c.Send(ctx, j.tx(batch))
	}
	if err != nil {
		var ce *smtpclient.Error
		if errors.As(err, &ce) && ce.Code == 530 {
			// "Authentication required" at MAIL: configured without
			// credentials for a relay that wants them.
			e := smarthostError(err)
			j.fail(batch, e, s.host)
			m.logAttempt(j, Smarthost, s.host, batch, e, time.Since(start))
			s.put(c)
			return
		}
	}
	j.record(batch, res, s.host, Smarthost)
	m.logTx(j, Smarthost, s.host, batch, res, err, time.Since(start))
	s.put(c)
}

// deadBeforeAccepting reports whether a transaction failed on the
// connection itself before the server accepted MAIL: a pooled session the
// server had already closed, silently or with a 421 (go-smtp and Postfix
// say "421 4.4.2 Idle timeout" as they hang up). Retrying on a new session
// cannot duplicate mail.
func deadBeforeAccepting(err error) bool {
	var ce *smtpclient.Error
	if !errors.As(err, &ce) {
		return false
	}
	if errors.Is(err, smtpclient.ErrUnusable) {
		return true
	}
	return ce.Command == "MAIL" && (ce.Code == 0 || ce.Code == 421)
}
