package mailroute

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/mailroute/go-mailroute/internal/mtasts"
)

// stsNamespace is the StateStore namespace of cached MTA-STS policies, by
// domain.
const stsNamespace = "mta-sts"

// stsRecheck is how long a domain's policy, or its absence, is used before
// the _mta-sts TXT record is asked again. RFC 8461 §5.1 wants senders to
// notice a new id; asking once per message would put a DNS round trip in
// front of every delivery, so this is the MX cache's default TTL instead.
const stsRecheck = 5 * time.Minute

// stsEntry is a policy as cached and stored.
type stsEntry struct {
	ID      string        `json:"id"`
	Policy  mtasts.Policy `json:"policy"`
	Fetched time.Time     `json:"fetched"`
	Expires time.Time     `json:"expires"`
}

// stsCache finds, fetches and keeps MTA-STS policies. Domains are checked
// at most once per stsRecheck in memory; policies persist in the store for
// their max_age.
type stsCache struct {
	m      *Mailer
	store  StateStore
	client *http.Client
	txt    func(ctx context.Context, name string) ([]string, error)

	mu       sync.Mutex
	memo     map[string]stsMemo
	inflight map[string]*stsCall
}

type stsMemo struct {
	entry *stsEntry // nil: no policy
	until time.Time
}

type stsCall struct {
	done  chan struct{}
	entry *stsEntry
}

func newSTSCache(m *Mailer, store StateStore) *stsCache {
	c := &stsCache{m: m, store: store, memo: make(map[string]stsMemo), inflight: make(map[string]*stsCall)}
	if tr, ok := m.cfg.Resolver.(interface {
		LookupTXT(ctx context.Context, name string) ([]string, error)
	}); ok {
		c.txt = tr.LookupTXT
	} else if m.cfg.Resolver == nil {
		c.txt = net.DefaultResolver.LookupTXT
	}
	var roots = m.cfg.Direct.TLSConfig
	c.client = mtasts.NewClient(nil, c.dial)
	if roots != nil && roots.RootCAs != nil {
		c.client = mtasts.NewClient(roots.RootCAs, c.dial)
	}
	return c
}

// dial reaches a policy host through the Mailer's resolver, so that the
// policy comes from the same view of DNS as the MX hosts.
func (c *stsCache) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if c.m.testPolicyPort != "" {
		port = c.m.testPolicyPort
	}
	ips, err := c.m.mx.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	var lastErr error
	for _, ip := range ips {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(ip.IP.String(), port))
		if err == nil {
			return conn, nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = errors.New("no address")
	}
	return nil, lastErr
}

// policy returns the domain's policy in force, or nil (none published,
// or mode none). A failure to find
// one is never an error of delivery: RFC 8461 §5 treats a domain whose
// policy cannot be had, and that has none cached, as having none.
func (c *stsCache) policy(ctx context.Context, domain string) *stsEntry {
	if c.txt == nil {
		return nil
	}
	now := c.m.now()
	c.mu.Lock()
	if memo, ok := c.memo[domain]; ok && now.Before(memo.until) && (memo.entry == nil || now.Before(memo.entry.Expires)) {
		c.mu.Unlock()
		return inForce(memo.entry)
	}
	if call := c.inflight[domain]; call != nil {
		c.mu.Unlock()
		select {
		case <-call.done:
			return inForce(call.entry)
		case <-ctx.Done():
			return nil
		}
	}
	call := &stsCall{done: make(chan struct{})}
	c.inflight[domain] = call
	c.mu.Unlock()

	call.entry = c.refresh(ctx, domain, now)

	c.mu.Lock()
	delete(c.inflight, domain)
	c.memo[domain] = stsMemo{entry: call.entry, until: now.Add(stsRecheck)}
	c.mu.Unlock()
	close(call.done)
	return inForce(call.entry)
}

// inForce hides a policy of mode none: the domain withdrew its policy, and
// that is cached so as not to be fetched again before its max_age.
func inForce(e *stsEntry) *stsEntry {
	if e == nil || e.Policy.Mode == mtasts.None {
		return nil
	}
	return e
}

// refresh applies RFC 8461 §3 and §5.1: the TXT id says whether the cached
// policy is current; a changed or new id fetches the policy; a fetch that
// fails keeps the cached policy until its max_age runs out.
func (c *stsCache) refresh(ctx context.Context, domain string, now time.Time) *stsEntry {
	cached := c.load(ctx, domain, now)
	txts, err := c.txt(ctx, "_mta-sts."+domain)
	var id string
	if err == nil {
		id, err = mtasts.SelectRecord(txts)
	}
	if err != nil {
		return cached // no record now: a cached policy still holds (§5.1)
	}
	if cached != nil && cached.ID == id {
		return cached
	}
	p, err := mtasts.Fetch(ctx, c.client, domain)
	if err != nil {
		var fe *mtasts.FetchError
		if errors.As(err, &fe) {
			c.m.tlsrpt.policyFailure(domain, fe.ResultType, err)
		}
		c.m.cfg.logger().WarnContext(ctx, "mailroute: MTA-STS policy not fetched", "domain", domain, "error", err)
		return cached
	}
	e := &stsEntry{ID: id, Policy: *p, Fetched: now, Expires: now.Add(time.Duration(p.MaxAge) * time.Second)}
	if b, err := json.Marshal(e); err == nil {
		if err := c.store.PutState(ctx, stsNamespace, domain, b, e.Expires); err != nil {
			c.m.cfg.logger().WarnContext(ctx, "mailroute: MTA-STS policy not stored", "domain", domain, "error", err)
		}
	}
	return e
}

// load returns the stored policy, if one is still within its max_age.
func (c *stsCache) load(ctx context.Context, domain string, now time.Time) *stsEntry {
	b, ok, err := c.store.GetState(ctx, stsNamespace, domain, now)
	if err != nil || !ok {
		return nil
	}
	var e stsEntry
	if json.Unmarshal(b, &e) != nil || !now.Before(e.Expires) {
		return nil
	}
	return &e
}
