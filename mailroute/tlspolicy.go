package mailroute

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mailroute/go-mailroute/internal/dane"
	"github.com/mailroute/go-mailroute/internal/mtasts"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// destTLS is one destination's TLS policy for one delivery, decided before
// any host is dialled. Precedence follows RFC 8461 §2: a host with
// authenticated TLSA records gets DANE, whatever MTA-STS says; the others
// get the domain's MTA-STS policy; the rest DirectOptions.TLS.
type destTLS struct {
	m      *Mailer
	domain string
	// daneMX: the MX answer was authenticated, so each host's TLSA
	// records apply (RFC 7672 §2.2.1).
	daneMX bool
	sts    *stsEntry
	// requireTLS: the message carries REQUIRETLS (RFC 8689).
	requireTLS bool
	// j is the job, whose message may say "TLS-Required: No" (RFC 8689
	// §5): then recipient policies are not enforced. Asked (ignore) only
	// when a policy would be: the header is not scanned for every message.
	j *job
}

// ignore reports whether the message says "TLS-Required: No" and may
// (without REQUIRETLS) have it honoured.
func (d *destTLS) ignore() bool {
	return !d.requireTLS && d.j != nil && d.j.tlsRequiredNo()
}

// hostTLS is how one MX host is to be reached.
type hostTLS struct {
	// level is what a session gives when it is set up as asked; for
	// opportunistic sessions the session itself says whether TLS came up.
	level     TLSProtection
	mandatory bool        // TLS or nothing
	conf      *tls.Config // nil: DirectOptions.TLSConfig
	// key partitions the session pools: a session set up under one
	// policy never carries mail that needs another.
	key string
	// refuse, when set, says why the host must not be used at all.
	refuse *Error
	// report records the session's TLS outcome for TLS-RPT; nil when no
	// policy applies.
	report *rptTarget
	// selfReported: the handshake itself records success or failure
	// (MTA-STS testing mode), so the dialler records only a missing
	// STARTTLS.
	selfReported bool
	// noMemo: building it recorded a report, which each message must do
	// again, so hostMemo does not keep it.
	noMemo bool
}

// policyTLS decides a direct delivery's TLS policy. hosts are the MX hosts
// from the ordinary lookup; under DANE the authenticated answer replaces
// them. A DANE resolver that cannot answer defers the destination: what
// it would have said is unknown, and guessing "no TLSA" is the downgrade
// DANE exists to prevent.
func (m *Mailer) policyTLS(ctx context.Context, j *job, hosts []*net.MX) (*destTLS, []*net.MX, *Error) {
	d := &j.tlsVal // the job's own: one delivery of the job at a time
	*d = destTLS{m: m, domain: j.dest.Domain, requireTLS: j.requireTLS}
	if j.dest.IsLiteral() {
		return d, hosts, nil
	}
	if m.dane != nil || m.sts != nil {
		d.j = j
	}
	if m.dane != nil {
		mxs, secure, err := m.dane.LookupMX(ctx, d.domain)
		switch {
		case err != nil && !d.ignore():
			return nil, nil, &Error{Command: "DNS", Err: fmt.Errorf("DANE: MX lookup of %s through the validating resolver: %w", d.domain, err)}
		case err == nil && secure:
			d.daneMX = true
			if len(mxs) > 0 && !(len(mxs) == 1 && mxs[0].Host == ".") {
				// The authenticated answer is the one DANE applies to
				// (RFC 7672 §2.2.1), named as the MX cache names hosts.
				hosts = make([]*net.MX, len(mxs))
				for i, mx := range mxs {
					hosts[i] = &net.MX{Host: strings.ToLower(strings.TrimSuffix(mx.Host, ".")), Pref: mx.Pref}
				}
			}
		}
	}
	if m.sts != nil {
		d.sts = m.sts.policy(ctx, d.domain)
	}
	return d, hosts, nil
}

// host decides how one MX host is reached.
func (d *destTLS) host(ctx context.Context, host string) *hostTLS {
	m := d.m
	h := d.hostPolicy(ctx, host)
	if (h.refuse != nil || h.mandatory) && d.ignore() {
		// TLS-Required: No: the sender prefers delivery to the
		// recipient domain's policy (RFC 8689 §5), whatever it says of
		// this host; the result still says what protected it.
		h = m.defaultHostTLS()
	}
	if d.requireTLS && h.refuse == nil && !h.level.authenticated() {
		c := *h // h may be shared (hostMemo)
		c.refuse = &Error{Command: "connect", Host: host, Err: fmt.Errorf("%w: %s has neither DANE nor an MTA-STS policy naming it", ErrREQUIRETLS, strings.TrimSuffix(host, "."))}
		h = &c
	}
	return h
}

// hostMemo keeps the hostTLS built for a domain's MX host from one DANE
// answer or one MTA-STS policy, so that messages after the first reuse it
// (a TLS configuration and the report's policy strings are not cheap).
// An entry is used only while its source — the cached TLSA answer or
// policy, compared by identity — is the one in force.
type hostMemo struct {
	mu sync.Mutex
	m  map[hostMemoKey]hostMemoEntry
}

type hostMemoKey struct{ domain, host string }

type hostMemoEntry struct {
	src any
	h   *hostTLS
}

// maxHostMemo bounds the memo; past it, it starts over.
const maxHostMemo = 10000

func (hm *hostMemo) get(domain, host string, src any, build func() *hostTLS) *hostTLS {
	k := hostMemoKey{domain, host}
	hm.mu.Lock()
	if e, ok := hm.m[k]; ok && e.src == src {
		hm.mu.Unlock()
		return e.h
	}
	hm.mu.Unlock()
	h := build()
	if h.refuse != nil || h.noMemo {
		return h // a report is recorded on each attempt
	}
	hm.mu.Lock()
	if hm.m == nil || len(hm.m) >= maxHostMemo {
		hm.m = make(map[hostMemoKey]hostMemoEntry)
	}
	hm.m[k] = hostMemoEntry{src: src, h: h}
	hm.mu.Unlock()
	return h
}

func (d *destTLS) hostPolicy(ctx context.Context, host string) *hostTLS {
	m := d.m
	name := strings.TrimSuffix(host, ".")
	if d.daneMX {
		t, err := m.dane.LookupTLSA(ctx, name, m.cfg.Direct.portNumber())
		if err != nil {
			// A TLSA answer that does not validate is an attack or a
			// broken zone; either way the host is not usable now
			// (RFC 7672 §2.2).
			rpt := &rptTarget{domain: d.domain, policy: rptPolicy{Type: "tlsa", Domain: d.domain}, mx: name}
			m.tlsrpt.failure(rpt, "dnssec-invalid", err)
			return &hostTLS{refuse: &Error{Command: "DNS", Host: name, Err: fmt.Errorf("%w: %v", ErrTLSPolicy, err)}}
		}
		if t.Secure && len(t.Records) > 0 {
			return m.hostMemo.get(d.domain, name, t.Records[0], func() *hostTLS { return d.daneHost(name, t.Records) })
		}
		// Authenticated denial, or an unsigned TLSA zone: no DANE for this
		// host; insecure records are ignored (RFC 7672 §2.2).
	}
	if d.sts != nil {
		return m.hostMemo.get(d.domain, name, d.sts, func() *hostTLS { return d.stsHost(name) })
	}
	return m.defaultHostTLS()
}

// daneHost authenticates by the host's TLSA records. With none usable the
// session is still TLS, unauthenticated (RFC 7672 §2.2, Postfix's
// "encrypt").
func (d *destTLS) daneHost(name string, records []*dns.TLSA) *hostTLS {
	m := d.m
	rpt := &rptTarget{domain: d.domain, policy: rptPolicy{Type: "tlsa", Domain: d.domain, Strings: tlsaStrings(records)}, mx: name}
	usable := dane.FilterUsable(records)
	if len(usable) == 0 {
		conf := m.baseTLS()
		conf.InsecureSkipVerify = true
		return &hostTLS{level: TLSUnverified, mandatory: true, conf: conf, key: "dane-encrypt:" + d.domain, report: rpt}
	}
	sum := sha256.New()
	for _, r := range usable {
		sum.Write([]byte(r.String()))
	}
	// DANE-TA chains must name the MX host (the TLSA base domain); the
	// recipient domain is no reference identifier for MX delivery (RFC
	// 7672 §3.2.3, and Postfix's dane level).
	names := []string{name}
	return &hostTLS{
		level: TLSDANE, mandatory: true, report: rpt,
		conf: dane.Config(m.cfg.Direct.TLSConfig, usable, names, time.Now),
		key:  "dane:" + d.domain + ":" + hex.EncodeToString(sum.Sum(nil)[:8]),
	}
}

// stsHost applies the domain's MTA-STS policy to one MX host (RFC 8461
// §4): in enforce mode a host outside the policy is not used, and one in
// it needs a certificate valid for its name; in testing mode the session
// is opportunistic and only the report knows.
func (d *destTLS) stsHost(name string) *hostTLS {
	m := d.m
	p := &d.sts.Policy
	rpt := &rptTarget{domain: d.domain, policy: rptPolicy{Type: "sts", Domain: d.domain, Strings: stsStrings(p), MXHost: p.MX}, mx: name}
	if p.Mode == mtasts.Enforce {
		if !p.Match(name) {
			err := fmt.Errorf("%w: MX host %s is not in the MTA-STS policy of %s (mx: %s)", ErrTLSPolicy, name, d.domain, strings.Join(p.MX, ", "))
			m.tlsrpt.failure(rpt, "validation-failure", err)
			return &hostTLS{refuse: &Error{Command: "connect", Host: name, Err: err}}
		}
		conf := m.baseTLS()
		conf.ServerName = name
		return &hostTLS{level: TLSMTASTS, mandatory: true, conf: conf, key: "sts:" + d.domain, report: rpt}
	}
	// Testing: deliver as without a policy, and check what enforce would
	// have checked, for the report (RFC 8461 §5).
	h := new(hostTLS)
	*h = *m.defaultHostTLS() // a copy: the default is shared
	h.report = rpt
	if !p.Match(name) {
		// Reported here, at each attempt: not kept in hostMemo.
		m.tlsrpt.failure(rpt, "validation-failure", fmt.Errorf("MX host %s is not in the MTA-STS policy of %s", name, d.domain))
		h.report = nil // the session's own outcome is not the policy's
		h.noMemo = true
		return h
	}
	conf := m.baseTLS()
	conf.ServerName = name
	roots := conf.RootCAs
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if _, err := verifyPKIX(cs, name, roots, time.Now()); err != nil {
			m.tlsrpt.failure(rpt, resultTypeOf(err), err)
		} else {
			m.tlsrpt.success(rpt)
		}
		return nil // testing mode never refuses
	}
	h.conf = conf
	h.key = "sts-testing:" + d.domain
	h.selfReported = true
	return h
}

// initTLSPolicy sets up MTA-STS, DANE and TLS-RPT for New. Policies are
// kept in the queue when it is a StateStore, so that a restart does not
// forget them (RFC 8461 §5.1 wants them kept for max_age).
func (m *Mailer) initTLSPolicy() {
	m.tlsrpt.now = m.now
	if addr := m.cfg.Direct.DANEResolver; addr != "" {
		m.dane = &dane.Resolver{Addr: addr}
	}
	if !m.cfg.Direct.NoMTASTS {
		m.sts = newSTSCache(m, m.state)
	}
}

// checkSession refuses a session that cannot carry the message: one
// without REQUIRETLS for a message that requires it (RFC 8689 §4.2.1).
func (d *destTLS) checkSession(c *smtpclient.Conn, h *hostTLS) *Error {
	if !d.requireTLS {
		return nil
	}
	if _, ok := c.Extension("REQUIRETLS"); !ok {
		return &Error{Command: "MAIL", Host: c.Host(), Err: fmt.Errorf("%w: %s does not offer REQUIRETLS", ErrREQUIRETLS, c.Host())}
	}
	return nil
}

// sessionTLS is the protection a session gives: the pool's level, or for
// opportunistic sessions whether STARTTLS came up.
func sessionTLS(c *smtpclient.Conn, level TLSProtection) TLSProtection {
	if !c.IsTLS() {
		return TLSNone
	}
	if level == TLSNone {
		return TLSUnverified
	}
	return level
}

// setTLS records which TLS protected a batch's transaction.
func (j *job) setTLS(batch []int, p TLSProtection) {
	for _, k := range batch {
		j.slot(k).TLS = p
	}
}

// defaultHostTLS is DirectOptions.TLS, for hosts no policy covers. The
// values are shared: never modify them.
func (m *Mailer) defaultHostTLS() *hostTLS {
	switch m.cfg.Direct.TLS {
	case RequireTLS:
		return hostRequireTLS
	case NoTLS:
		return hostNoTLS
	}
	return hostOpportunistic
}

var (
	hostRequireTLS    = &hostTLS{level: TLSVerified, mandatory: true}
	hostNoTLS         = &hostTLS{level: TLSNone}
	hostOpportunistic = &hostTLS{level: TLSUnverified}
)

// baseTLS is a copy of DirectOptions.TLSConfig to build on.
func (m *Mailer) baseTLS() *tls.Config {
	if c := m.cfg.Direct.TLSConfig; c != nil {
		return c.Clone()
	}
	return &tls.Config{}
}

func verifyPKIX(cs tls.ConnectionState, name string, roots *x509.CertPool, now time.Time) ([][]*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, fmt.Errorf("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	return cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter, CurrentTime: now})
}

func (o DirectOptions) portNumber() int {
	n, _ := strconv.Atoi(o.port())
	return n
}

// now is the Mailer's clock (a test seam through Config.now).
func (m *Mailer) now() time.Time {
	if m.cfg.now != nil {
		return m.cfg.now()
	}
	return time.Now()
}
