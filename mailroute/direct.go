package mailroute

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// Limits on the work of delivering one batch to one destination, so that
// a domain with hundreds of MX hosts (or hosts whose names never resolve)
// costs a bounded number of lookups and connections, as in Postfix:
const (
	// directAddressLimit is how many MX addresses are tried: Postfix's
	// smtp_mx_address_limit, 5. Enough for a primary and backups, each
	// dual-stack, without hammering a dead domain.
	directAddressLimit = 5
	// directSessionLimit is how many sessions (connections that got past
	// the greeting and EHLO) are tried: Postfix's smtp_mx_session_limit,
	// 2. A second server answering like the first rarely changes the
	// outcome; a third never has in Postfix's experience.
	directSessionLimit = 2
	// directHostLimit is how many MX host names are looked up. Postfix
	// has no such limit, but a host whose name does not resolve costs a
	// DNS timeout and no address, so without it 500 such hosts held one
	// SendMail for about 40 minutes. Ten covers every real MX set (the
	// big providers publish 5) with room for hosts that fail to resolve.
	directHostLimit = 10
)

// maxRcptsPerTx is the number of recipients RFC 5321 §4.5.3.1.8 obliges
// every server to accept in one transaction; more go in further ones.
const maxRcptsPerTx = 100

// deliverDirect delivers a job to its destination's MX hosts, as a careful
// MTA does:
//
//   - hosts in preference order (equal preferences shuffled by the cache),
//     each host's addresses (IPv4 first: rDNS is more often right there);
//   - the next address or host on a connection failure, a timeout, a 421
//     or other failed greeting, a TLS failure under RequireTLS, a 4xx to
//     MAIL, or a drop before the end of data;
//   - a 5xx to MAIL, a 4xx/5xx to the end of data, a size or SMTPUTF8
//     refusal, or a drop after the end of data is final for the
//     transaction: another MX would answer the same, or might deliver the
//     message twice;
//   - at most 100 recipients per transaction, on one connection;
//   - at most directHostLimit host names looked up, directAddressLimit
//     addresses tried and directSessionLimit sessions per transaction, and
//     nothing more (no lookup, no dial) once ctx is done.
//   - each host under the destination's TLS policy (tlspolicy.go): DANE,
//     MTA-STS or DirectOptions.TLS; a host the policy excludes is skipped,
//     one whose TLS fails the policy is the next host's turn.
func (m *Mailer) deliverDirect(ctx context.Context, j *job) {
	hosts, err := m.directHosts(ctx, j)
	if err != nil {
		j.failAll(fromDNS(err), "")
		return
	}
	sec, hosts, perr := m.policyTLS(ctx, j, hosts)
	if perr != nil {
		j.failAll(perr, "")
		return
	}
	pending := j.pending()
	for len(pending) > 0 {
		n := min(len(pending), maxRcptsPerTx)
		m.directBatch(ctx, j, sec, hosts, pending[:n])
		pending = pending[n:]
	}
}

// directHosts returns the MX host names to try, or the literal address.
// The list is made in the job's own arrays when they have room: the job
// is delivered by one goroutine at a time, and nothing keeps the list.
func (m *Mailer) directHosts(ctx context.Context, j *job) ([]*net.MX, error) {
	d := j.dest
	if d.IsLiteral() {
		return []*net.MX{{Host: d.Literal.String()}}, nil
	}
	a, err := d.mxCache().LookupInto(ctx, d.Domain, j.mxHosts[:], j.mxRecords[:])
	if err != nil {
		return nil, err
	}
	return a.Hosts, nil
}

// hostAddrs resolves one MX host to the addresses to try, IPv4 first, with
// the family of DirectOptions.LocalAddr only when one is set. The list is
// appended to buf[:0] (the job's, reused host after host).
func (m *Mailer) hostAddrs(ctx context.Context, host string, buf []netip.Addr) ([]netip.Addr, error) {
	// Only what may be an address literal is parsed as one: a failed
	// parse allocates its error, for every message to a named MX host.
	if strings.IndexFunc(host, notAddrRune) < 0 {
		if a, err := netip.ParseAddr(host); err == nil {
			return append(buf[:0], a), nil
		}
	}
	ips, err := m.mx.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	local := m.cfg.Direct.LocalAddr
	want4, want6 := !local.IsValid() || local.Is4(), !local.IsValid() || !local.Is4()
	out := buf[:0]
	for _, v4 := range [2]bool{true, false} { // IPv4 first, then IPv6
		if v4 && !want4 || !v4 && !want6 {
			continue
		}
		for _, ip := range ips {
			if a, ok := netip.AddrFromSlice(ip.IP); ok && a.Unmap().Is4() == v4 {
				out = append(out, a.Unmap())
			}
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no usable address", Name: host, IsNotFound: true}
	}
	return out, nil
}

// directBatch sends one transaction's recipients, walking the hosts until
// one gives a final answer. Sessions come from the per-host pools, so a
// burst of messages to one MX rides one connection.
func (m *Mailer) directBatch(ctx context.Context, j *job, sec *destTLS, hosts []*net.MX, batch []int) {
	var lastErr *Error
	addrsTried, sessions := 0, 0
	for n, h := range hosts {
		if ctx.Err() != nil {
			j.fail(batch, errorf(false, ctx.Err(), "delivery to %s stopped", j.dest.Domain), "")
			return
		}
		if n == directHostLimit || addrsTried == directAddressLimit || sessions == directSessionLimit {
			break
		}
		ht := sec.host(ctx, h.Host)
		if ht.refuse != nil {
			keepMoreTelling(&lastErr, ht.refuse)
			m.logAttempt(j, Direct, h.Host, batch, ht.refuse, noClock)
			continue
		}
		addrs, err := m.hostAddrs(ctx, h.Host, j.addrs[:0])
		if err != nil {
			e := &Error{Command: "connect", Host: h.Host, Err: err}
			keepMoreTelling(&lastErr, e)
			m.logAttempt(j, Direct, h.Host, batch, e, noClock)
			continue
		}
		for _, a := range addrs {
			if ctx.Err() != nil {
				j.fail(batch, errorf(false, ctx.Err(), "delivery to %s stopped", j.dest.Domain), "")
				return
			}
			if addrsTried == directAddressLimit || sessions == directSessionLimit {
				break
			}
			addrsTried++
			p := m.direct.get(h.Host, a, ht)
			c, pooled, dialErr := p.get(ctx)
			if dialErr != nil {
				if dialErr.Host == "" {
					dialErr.Host = h.Host
				}
				keepMoreTelling(&lastErr, dialErr)
				m.logAttempt(j, Direct, h.Host, batch, dialErr, noClock)
				continue
			}
			sessions++
			if e := sec.checkSession(c, ht); e != nil {
				p.put(c)
				keepMoreTelling(&lastErr, e)
				m.logAttempt(j, Direct, h.Host, batch, e, noClock)
				continue
			}
			var done bool
			if done, batch = m.directTx(ctx, j, p, c, pooled, batch, &lastErr); done {
				return
			}
		}
	}
	if lastErr == nil {
		lastErr = errorf(false, nil, "no MX host of %s could be tried", j.dest.Domain)
	}
	j.fail(batch, lastErr, lastErr.Host)
}

// dialDirect opens a session to one MX address under the host's TLS
// policy, and counts its TLS outcome for TLS-RPT.
func (m *Mailer) dialDirect(ctx context.Context, addr netip.Addr, host string, ht *hostTLS) (*smtpclient.Conn, *Error) {
	c, err := m.dialDirectTLS(ctx, addr, host, ht)
	if err != nil {
		m.tlsrpt.reportSession(ht, nil, err)
		return nil, err
	}
	m.tlsrpt.reportSession(ht, c, nil)
	return c, nil
}

// dialDirectTLS is dialDirect's session: TLS as the policy says (DANE or
// MTA-STS verification, or DirectOptions.TLS). An opportunistic handshake
// that fails is retried once in plaintext; a mandatory one never is.
func (m *Mailer) dialDirectTLS(ctx context.Context, addr netip.Addr, host string, ht *hostTLS) (*smtpclient.Conn, *Error) {
	o := &m.cfg.Direct
	cfg := &smtpclient.Config{
		LocalName: m.hostname,
		TLSConfig: o.TLSConfig,
		Timeouts:  o.Timeouts.client(),
	}
	if ht.conf != nil {
		cfg.TLSConfig = ht.conf
	}
	if o.LocalAddr.IsValid() {
		cfg.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: o.LocalAddr.AsSlice()}}
	}
	if m.testDialer != nil {
		cfg.Dialer = m.testDialer
	}
	switch {
	case ht.mandatory:
		cfg.TLS = smtpclient.TLSRequired
	case o.TLS == NoTLS:
		cfg.TLS = smtpclient.TLSNone
	default:
		cfg.TLS = smtpclient.TLSOpportunistic
	}
	target := net.JoinHostPort(addr.String(), o.port())
	c, err := smtpclient.Dial(ctx, target, host, cfg)
	if err == nil {
		return c, nil
	}
	if cfg.TLS == smtpclient.TLSOpportunistic && errors.Is(err, smtpclient.ErrTLSFailed) {
		m.cfg.logger().WarnContext(ctx, "mailroute: STARTTLS failed, retrying in plaintext (RFC 7435)",
			"host", host, "addr", target, "error", err)
		cfg.TLS = smtpclient.TLSNone
		if c, err2 := smtpclient.Dial(ctx, target, host, cfg); err2 == nil {
			return c, nil
		} else {
			err = err2
		}
	}
	var extra error
	if cfg.TLS == smtpclient.TLSRequired && (errors.Is(err, smtpclient.ErrTLSFailed) || errors.Is(err, smtpclient.ErrTLSUnavailable)) {
		extra = ErrTLSRequired
		if ht.report != nil {
			extra = ErrTLSPolicy // DANE or MTA-STS: the domain asked for it
		}
	}
	e := fromClient(err, extra)
	if e.Host == "" {
		e.Host = host
	}
	if cfg.TLS == smtpclient.TLSRequired && extra != nil {
		e.Permanent = false // another MX, or a later attempt, may do TLS
	}
	return nil, e
}

// directTx runs one transaction on c, a session from p, and gives the
// session back. It reports whether the batch was decided (delivered, or
// failed in a way another host would not change); when it returns false,
// *lastErr says why the next host should be tried, with the recipients
// still to try: a recipient the server refused outright (5xx to RCPT)
// keeps that answer, final as in Postfix, whatever became of the
// transaction. A pooled session that turns out dead before anything could
// have been accepted is replaced once.
func (m *Mailer) directTx(ctx context.Context, j *job, p *pool, c *smtpclient.Conn, pooled bool, batch []int, lastErr **Error) (bool, []int) {
	start := m.logClock()
	if batch = j.withoutSMTPUTF8(c, batch, Direct); len(batch) == 0 {
		p.put(c)
		return true, nil
	}
	res, err := j.send(ctx, c, j.tx(batch))
	if pooled && redialable(ctx, res, err) {
		var e *Error
		if c, e = p.redial(ctx, c); e != nil {
			keepMoreTelling(lastErr, e)
			m.logAttempt(j, Direct, e.Host, batch, e, start)
			return false, batch
		}
		res, err = j.send(ctx, c, j.tx(batch))
	}
	defer p.put(c)
	if err != nil && !finalForTransaction(err) {
		e := fromClient(err, nil)
		keepMoreTelling(lastErr, e)
		m.logAttempt(j, Direct, c.Host(), batch, e, start)
		rest := make([]int, 0, len(batch))
		for i, k := range batch {
			if rcptRefused(res.Rcpts[i].Err) {
				j.recordOne(k, res, i, c.Host(), Direct)
			} else {
				rest = append(rest, k)
			}
		}
		return len(rest) == 0, rest
	}
	j.record(batch, res, c.Host(), Direct)
	j.setTLS(batch, sessionTLS(c, p.tls))
	m.logTx(j, Direct, c.Host(), batch, res, err, start)
	return true, nil
}

// rcptRefused reports a permanent refusal of the recipient itself.
func rcptRefused(err error) bool {
	ce, ok := err.(*smtpclient.Error)
	return ok && ce.Command == "RCPT" && ce.Permanent
}

// keepMoreTelling replaces *kept with e unless *kept is a server's reply and
// e is not: when every host fails, the recipients get the last reply a
// server gave (a greylisting 450 says more than the next host's refused
// connection), and a connection-class error only when no host answered at
// all — which is what the fallback policy needs to know.
func keepMoreTelling(kept **Error, e *Error) {
	if *kept == nil || e.Code != 0 || (*kept).Code == 0 {
		*kept = e
	}
}

// finalForTransaction reports whether a transaction-level error ends the
// host walk: a 5xx to MAIL, anything after the end of data, local refusals.
// A 4xx to MAIL or a network failure before the end of data moves on.
func finalForTransaction(err error) bool {
	var ce *smtpclient.Error
	if !errors.As(err, &ce) {
		return false
	}
	switch {
	case errors.Is(err, smtpclient.ErrSizeExceeded), errors.Is(err, smtpclient.ErrSMTPUTF8Unsupported),
		errors.Is(err, smtpclient.ErrInvalidAddress):
		return true
	case ce.Command == ".":
		return true // the reply, or the silence, after the end of data
	case ce.Code >= 500:
		return true
	}
	return false
}

// notAddrRune reports a character that appears in no IPv4 or IPv6 address
// literal (zone identifiers aside, which a host from DNS never has).
func notAddrRune(r rune) bool {
	return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F' || r == '.' || r == ':')
}
