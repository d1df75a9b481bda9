package mailroute

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mailroute/go-mailroute/internal/dane"
	"github.com/mailroute/go-mailroute/internal/dnsname"
	"github.com/mailroute/go-mailroute/internal/message"
	"github.com/mailroute/go-mailroute/internal/mx"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// Mailer sends mail the way its Router decides. It is safe for concurrent
// use; make one and share it. Close releases its connections.
type Mailer struct {
	cfg      Config
	hostname string
	router   Router
	mx       *mx.Cache
	relay    *smarthost // nil without Config.Relay
	relays   namedRelays
	direct   directPools
	queue    *queueRuntime // nil without Config.Queue
	state    StateStore    // what the Mailer learns: Config.Queue's, or in memory
	learn    *learner      // routes learned from refusals; see Learning
	figures  *figures      // outcome figures; see Stats

	// testDialer replaces the direct dialer in tests that count
	// connections from the client's side.
	testDialer smtpclient.Dialer

	// adhoc are SendMail's relays when Config.Relay is nil.
	adhoc adhocRelays

	// Authenticated TLS for direct delivery: MTA-STS policies (nil when
	// DirectOptions.NoMTASTS), the validating resolver for DANE (nil
	// without DirectOptions.DANEResolver), TLS-RPT counts, and the
	// port policy hosts are reached on in tests ("": 443).
	sts            *stsCache
	dane           *dane.Resolver
	tlsrpt         tlsReporter
	hostMemo       hostMemo
	testPolicyPort string

	sends     inflight            // the Sends running, for Shutdown
	addrs     message.AddressMemo // envelope addresses parsed lately
	closeOnce sync.Once
	closed    chan struct{}
}

// New checks cfg and returns a Mailer. Everything that can be checked
// without the network is checked here: the host name, the rules, the relay
// address, the options.
func New(cfg Config) (*Mailer, error) {
	m := &Mailer{cfg: cfg, closed: make(chan struct{})}
	m.sends.init()

	name, err := checkHostname(cfg.Hostname)
	if err != nil {
		return nil, err
	}
	m.hostname = name

	switch r := cfg.Router.(type) {
	case nil:
		m.router = DefaultRouter
	case Rules:
		if m.router, err = compileRules(r); err != nil {
			return nil, err
		}
	default:
		m.router = r
	}

	if cfg.Relay != nil {
		if err := cfg.Relay.check(); err != nil {
			return nil, err
		}
		m.relay = newSmarthost(cfg.Relay, m.hostname, cfg.maxConnsPerHost())
	}
	if err := m.setupRelays(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.Direct.check(); err != nil {
		return nil, err
	}
	if err := cfg.checkDKIM(); err != nil {
		return nil, err
	}

	m.direct.m = m
	m.mx = &mx.Cache{
		Resolver:     resolverOrDefault(cfg.Resolver),
		TTL:          cfg.MXCacheTTL,
		TemporaryTTL: cfg.MXCacheTemporaryTTL,
		Context:      m.sends.ctx, // Shutdown stops the lookups in flight
	}
	m.state = stateStoreOf(cfg.Queue, cfg.now)
	m.learn = newLearner(m)
	m.figures = newFigures(cfg.MeterProvider)
	m.initTLSPolicy()
	m.startTLSRPT()
	go m.reapLoop()
	if cfg.Queue != nil {
		m.queue = newQueueRuntime(m)
		m.queue.start()
	}
	return m, nil
}

// checkHostname validates an EHLO name: a fully qualified host name
// (normalised to A-labels) or an address literal. Receivers check the
// name against the sending address's PTR record, and many refuse a single
// label or localhost outright, so those are refused here rather than
// discovered as rejected mail.
func checkHostname(h string) (string, error) {
	if h == "" {
		return "", errors.New("mailroute: Config.Hostname is empty: set it to this host's fully qualified name, the one its public address's PTR record gives (e.g. mail.example.com)")
	}
	if addr, ok, err := dnsname.ParseLiteral(h); ok {
		if err != nil {
			return "", fmt.Errorf("mailroute: Config.Hostname: %w", err)
		}
		return dnsname.FormatLiteral(addr), nil
	}
	name, err := dnsname.Normalize(h)
	if err != nil {
		return "", fmt.Errorf("mailroute: Config.Hostname: %w", err)
	}
	if !isFQDN(name) {
		return "", fmt.Errorf("mailroute: Config.Hostname %q is not a fully qualified domain name: receivers want the name the PTR record of this host's public address gives (e.g. mail.example.com)", h)
	}
	return name, nil
}

// isFQDN reports whether a normalised host name has at least two labels
// and is not localhost (RFC 6761 §6.3) or a name under it.
func isFQDN(name string) bool {
	if !strings.Contains(name, ".") {
		return false
	}
	switch {
	case name == "localhost.localdomain", strings.HasSuffix(name, ".localhost"),
		strings.HasSuffix(name, ".localdomain"):
		return false
	}
	return true
}

// ErrClosed is returned by a Mailer after Close.
var ErrClosed = errors.New("mailroute: Mailer is closed")

// Route returns the route mail to a domain or address would take, with the
// evidence, without sending anything: a dry run of the Mailer's routing,
// through the same MX cache delivery uses. A learned route (see Learning)
// shows as its evidence: which reply taught it, when, and until when. An
// address literal ("user@[192.0.2.1]") always goes Direct.
func (m *Mailer) Route(ctx context.Context, domainOrAddress string) (Route, error) {
	domain := domainOrAddress
	if i := strings.LastIndexByte(domain, '@'); i >= 0 {
		domain = domain[i+1:]
	}
	d, err := parseDestination(domain)
	if err != nil {
		return Route{}, err
	}
	d.cache = m.mx
	if c, ok := m.router.(*compiledRules); ok && !d.IsLiteral() {
		// A call on the concrete type lets d stay on this stack, so a rule
		// hit costs no allocation at all.
		r, err := c.Route(ctx, &d)
		r, err = checkDecision(&d, r, err)
		return m.withLessons(ctx, d.Domain, r, err)
	}
	heap := d
	r, err := m.route(ctx, &heap)
	return m.withLessons(ctx, heap.Domain, r, err)
}

// Destination returns the destination for a domain or an address's domain
// as the Mailer sees it: normalised, and bound to the Mailer's MX cache, so
// its MX method answers from the same lookups routing and delivery use.
func (m *Mailer) Destination(domainOrAddress string) (*Destination, error) {
	domain := domainOrAddress
	if i := strings.LastIndexByte(domain, '@'); i >= 0 {
		domain = domain[i+1:]
	}
	return m.destination(domain)
}

// destination makes the Destination for a domain or literal, bound to the
// Mailer's MX cache.
func (m *Mailer) destination(domain string) (*Destination, error) {
	d, err := parseDestination(domain)
	if err != nil {
		return nil, err
	}
	d.cache = m.mx
	return &d, nil
}

func (m *Mailer) route(ctx context.Context, d *Destination) (Route, error) {
	if d.IsLiteral() {
		return Route{Via: Direct, Reason: d.Domain + " is an address literal"}, nil
	}
	r, err := m.router.Route(ctx, d)
	return checkDecision(d, r, err)
}

// checkDecision turns a router's "no decision" into an error.
func checkDecision(d *Destination, r Route, err error) (Route, error) {
	if err != nil {
		return Route{}, err
	}
	if r.Via != Direct && r.Via != Relayed {
		return Route{}, fmt.Errorf("%w for %s: the router made no decision", ErrNoRoute, d.Domain)
	}
	return r, nil
}

func parseDestination(domain string) (Destination, error) {
	if addr, ok, err := dnsname.ParseLiteral(domain); ok {
		if err != nil {
			return Destination{}, err
		}
		return Destination{Domain: dnsname.FormatLiteral(addr), Literal: addr}, nil
	}
	n, err := dnsname.Normalize(domain)
	if err != nil {
		return Destination{}, err
	}
	return Destination{Domain: n}, nil
}

// Close is Shutdown with a deadline of 30 seconds.
func (m *Mailer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return m.Shutdown(ctx)
}

// Shutdown stops the Mailer: new Sends fail with ErrClosed, the queue's
// workers stop taking work, and the work in flight — Send, SendMail and
// SendMsg calls at any stage (DNS, dial, TLS, transaction) and the queue's
// attempts — is waited for. When ctx ends first, that work is cancelled:
// those calls return with their recipients Deferred (a message whose data
// had gone out may have been accepted, and says so); of a queued attempt,
// the outcomes already known (a server accepted or refused a recipient)
// are recorded, and only the recipients whose outcome is unknown stay
// queued as they were, to be retried by the next Mailer on the same queue:
// nothing is lost, and nothing the server is known to have taken is sent
// again. Only then do the connections end, idle ones with QUIT, so none is
// left open: Close waits, and cancels only at its deadline. It is safe to
// call more than once; later calls return nil at once.
func (m *Mailer) Shutdown(ctx context.Context) error {
	var err error
	m.closeOnce.Do(func() {
		close(m.closed)
		if m.queue != nil {
			err = m.queue.shutdown(ctx)
		}
		if serr := m.sends.close(ctx); err == nil {
			err = serr
		}
		m.sends.cancel() // nobody waits for a lookup still in flight now
		quitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		m.tlsrpt.flush(quitCtx) // the sessions' TLS-RPT counts; a failure is logged
		if m.relay != nil {
			m.relay.close(quitCtx)
		}
		m.relays.each(func(s *smarthost) { s.close(quitCtx) })
		m.adhoc.close(quitCtx)
		m.direct.close(quitCtx)
	})
	return err
}

// reapLoop ends idle sessions past their time until the Mailer closes.
func (m *Mailer) reapLoop() {
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	for {
		select {
		case <-m.closed:
			return
		case <-t.C:
			m.direct.reap()
			m.adhoc.reap()
			if m.relay != nil {
				m.relay.pool.reap()
			}
			m.relays.each(func(s *smarthost) { s.pool.reap() })
		}
	}
}

// Config returns the configuration the Mailer was made with, its Hostname
// being the EHLO name it uses. The slices and pointers in it are the
// Mailer's own: read them, do not change them.
func (m *Mailer) Config() Config {
	cfg := m.cfg
	cfg.Hostname = m.hostname
	return cfg
}
