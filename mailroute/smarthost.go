package mailroute

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// Pool defaults for the relay.
const (
	defaultMaxIdle     = 2
	defaultIdleTimeout = 60 * time.Second
)

// relay is the relay: how to reach it and its pool of idle,
// authenticated sessions.
type smarthost struct {
	name     string     // in Config.Relays; "" for Config.Relay and SendMail's
	failover *smarthost // Relay.Failover; nil: none
	host     string     // for TLS verification and errors
	addr     string
	cfg      smtpclient.Config
	pool     pool
}

func newSmarthost(r *Relay, localName string, maxConns int) *smarthost {
	host, _, _ := net.SplitHostPort(r.Addr) // checked in New
	s := &smarthost{
		host: host,
		addr: r.Addr,
		cfg: smtpclient.Config{
			LocalName: localName,
			TLSConfig: r.TLSConfig,
			Auth:      r.Auth,
			Username:  r.Username,
			Password:  r.Password,
			Timeouts:  r.Timeouts.client(),
		},
	}
	if r.TokenSource != nil {
		s.cfg.AuthFor = oauth2AuthFor(r)
		s.cfg.Username = ""
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
	s.pool = pool{
		tls:         TLSRelay,
		max:         maxConns,
		maxIdle:     r.MaxIdle,
		idleTimeout: r.IdleTimeout,
		now:         time.Now,
		dial:        s.dial,
	}
	if r.InsecurePlaintextLoopback {
		s.pool.tls = TLSUnverified // STARTTLS, if any, is not verified
	}
	if s.pool.maxIdle == 0 {
		s.pool.maxIdle = defaultMaxIdle
	}
	if s.pool.idleTimeout <= 0 {
		s.pool.idleTimeout = defaultIdleTimeout
	}
	return s
}

// close ends the relay's idle sessions with QUIT.
func (s *smarthost) close(ctx context.Context) { s.pool.close(ctx) }

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

// smarthostError classifies a relay failure: a TLS or authentication
// problem is the user's configuration to fix, so it wraps ErrRelayTLS
// or ErrRelayAuth and is never permanent (the mail is kept, not
// bounced). A 454 to AUTH is transient (maddy answers a wrong password so).
func smarthostError(err error) *Error {
	var ce *smtpclient.Error
	errors.As(err, &ce)
	switch {
	case errors.Is(err, smtpclient.ErrTLSFailed), errors.Is(err, smtpclient.ErrTLSUnavailable):
		e := fromClient(err, ErrRelayTLS)
		e.Permanent = false
		return e
	case errors.Is(err, smtpclient.ErrAuthFailed) && ce != nil && ce.Code >= 400 && ce.Code < 500:
		return fromClient(err, nil)
	case errors.Is(err, smtpclient.ErrAuthFailed), errors.Is(err, smtpclient.ErrNoAuthMechanism),
		errors.Is(err, smtpclient.ErrAuthRefusedInsecure),
		authRequired(ce), authRequired(mailRefusalIn(ce)):
		e := fromClient(err, ErrRelayAuth)
		e.Permanent = false
		return e
	}
	return fromClient(err, nil)
}

// mailRefusalIn returns the refusal of MAIL that an out-of-step error
// keeps as its cause, or nil.
func mailRefusalIn(ce *smtpclient.Error) *smtpclient.Error {
	if ce == nil || !errors.Is(ce, smtpclient.ErrOutOfStep) {
		return nil
	}
	var inner *smtpclient.Error
	if errors.As(ce.Err, &inner) && inner.Command == "MAIL" {
		return inner
	}
	return nil
}

// authRequired reports whether a reply says the relay wants AUTH first:
// 530 5.7.0 (RFC 4954), or what servers answer instead — maddy's "502 5.7.0
// Please authenticate first", others' 550 5.7.1 "authentication required".
func authRequired(ce *smtpclient.Error) bool {
	switch {
	case ce == nil:
		return false
	case ce.Code == 530:
		return true
	case ce.Code >= 500 && ce.Enhanced[1] == 7:
		return strings.Contains(strings.ToLower(ce.Message), "authenticat")
	}
	return false
}

// deliverSmarthost hands a job to the relay, ≤100 recipients per
// transaction. A pooled session that turns out dead before the server
// accepted anything is replaced once, transparently.
func (m *Mailer) deliverSmarthost(ctx context.Context, j *job) {
	if j.relay == nil {
		j.failAll(&Error{Command: "route", Err: ErrNoRelay}, "")
		m.logAttempt(j, Relayed, "", j.pending(), &Error{Err: ErrNoRelay}, noClock)
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
	start := m.logClock()
	s, c, pooled, e := m.getSession(ctx, j, batch)
	if e != nil {
		j.fail(batch, e, s.host)
		m.logAttempt(j, Relayed, s.host, batch, e, start)
		return
	}
	if e := relayREQUIRETLS(j, c, s.pool.tls); e != nil {
		j.fail(batch, e, s.host)
		m.logAttempt(j, Relayed, s.host, batch, e, start)
		s.pool.put(c)
		return
	}
	if batch = j.withoutSMTPUTF8(c, batch, Relayed); len(batch) == 0 {
		s.pool.put(c)
		return
	}
	res, err := j.send(ctx, c, j.tx(batch))
	if pooled && redialable(ctx, res, err) {
		if c, e = s.pool.redial(ctx, c); e != nil {
			j.fail(batch, e, s.host)
			m.logAttempt(j, Relayed, s.host, batch, e, start)
			return
		}
		res, err = j.send(ctx, c, j.tx(batch))
	}
	if err != nil {
		var ce *smtpclient.Error
		if errors.As(err, &ce) && (ce.Command == "MAIL" && authRequired(ce) || authRequired(mailRefusalIn(ce))) {
			// "Authentication required" at MAIL: configured without
			// credentials for a relay that wants them. Also when the
			// server then fell out of step (maddy reads a pipelined
			// chunk after a refused MAIL as commands): the recipients
			// stay Deferred either way, and the cause is the setup.
			e := smarthostError(err)
			j.fail(batch, e, s.host)
			m.logAttempt(j, Relayed, s.host, batch, e, start)
			s.pool.put(c)
			return
		}
	}
	j.record(batch, res, s.host, Relayed)
	j.setTLS(batch, sessionTLS(c, s.pool.tls))
	m.logTx(j, Relayed, s.host, batch, res, err, start)
	s.pool.put(c)
}

// redialable reports whether a transaction on a pooled session failed in
// a way that a new session can retry without any risk of a duplicate: the
// session turned out dead (closed while idle, silently or with a 421 as
// go-smtp and Postfix do on an idle timeout) or out of step before the
// server could have accepted the message (smtpclient.Retryable), no
// recipient was delivered by an earlier transaction of the same Send, and
// the context is still live.
func redialable(ctx context.Context, res *smtpclient.TxResult, err error) bool {
	return err != nil && ctx.Err() == nil && len(res.Accepted) == 0 && smtpclient.Retryable(err)
}
