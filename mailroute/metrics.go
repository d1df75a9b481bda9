package mailroute

import (
	"context"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/mailroute/go-mailroute/internal/dnsname"
	"github.com/mailroute/go-mailroute/internal/mx"
)

// Outcome figures. Every recipient's attempt is counted per provider (or
// MX site) and per path, with the class of its failure, and the time its
// delivery took is recorded; Mailer.Stats gives the same figures in
// process, and Config.MeterProvider exports them with OpenTelemetry.
//
// Instruments (OpenTelemetry has no semantic conventions for mail
// delivery, so names follow its naming guidelines under the "mailroute."
// namespace; error.type is the general semantic-convention attribute):
//
//	mailroute.delivery.recipients   Int64Counter, {recipient}
//	    recipients whose attempt ended, by outcome
//	mailroute.delivery.fallbacks    Int64Counter, {recipient}
//	    recipients whose direct failure sent them to the relay
//	mailroute.delivery.duration     Float64Histogram, s
//	    time from routing to the delivered outcome, per delivered recipient
//
// Attributes:
//
//	mailroute.provider   the provider whose MX hosts (or mailbox domain) the
//	                     destination has, e.g. "Google", "Microsoft"; for
//	                     other domains the MX site ("mx1.example.net,
//	                     mx2.example.net"), or the domain when its MX is
//	                     unknown. One value per site: bounded by where you
//	                     send.
//	mailroute.path       "direct", "relay" (routed to the relay) or
//	                     "fallback" (the relay after direct failed)
//	mailroute.outcome    "delivered", "deferred" or "failed" (recipients only)
//	error.type           the failure's Class ("policy", "mailbox", …);
//	                     absent when delivered. On fallbacks, the class of
//	                     the direct failure.
const (
	metricRecipients = "mailroute.delivery.recipients"
	metricFallbacks  = "mailroute.delivery.fallbacks"
	metricDuration   = "mailroute.delivery.duration"

	attrProvider = "mailroute.provider"
	attrPath     = "mailroute.path"
	attrOutcome  = "mailroute.outcome"
	attrError    = "error.type"
)

// Path names, as in the mailroute.path attribute and Stats.
const (
	PathDirect   = "direct"
	PathRelay    = "relay"
	PathFallback = "fallback"
)

// Stats is a snapshot of the outcome figures since the Mailer started.
type Stats struct {
	// Rows, one per provider (or MX site) and path, sorted by provider
	// then path.
	Rows []StatsRow
}

// StatsRow is the figures of one provider (or MX site) on one path.
type StatsRow struct {
	// Provider is as the mailroute.provider attribute: a provider name, or
	// an MX site.
	Provider string
	// Path is PathDirect, PathRelay or PathFallback.
	Path string
	// Delivered, Deferred and Failed count recipients by outcome.
	Delivered, Deferred, Failed int64
	// FellBack counts the recipients this path failed that then went to
	// the relay (on the direct path only).
	FellBack int64
	// Classes counts the deferred, failed and fallen-back recipients by
	// the class of their failure ("policy", "mailbox", …).
	Classes map[string]int64
	// Latency is the total time the delivered recipients took, from
	// routing to the server's acceptance; Latency/Delivered is the mean.
	Latency time.Duration
}

// figures records outcome figures into the OpenTelemetry instruments and
// the in-process table.
type figures struct {
	recipients metric.Int64Counter
	fallbacks  metric.Int64Counter
	duration   metric.Float64Histogram
	// export is false without a MeterProvider: building attribute sets
	// for no-op instruments costs allocations on every Send.
	export bool

	mu   sync.Mutex
	rows map[statsKey]*StatsRow
	// providers remembers providerOf's answers by domain.
	providers map[string]providerMemo
}

type statsKey struct{ provider, path string }

func newFigures(mp metric.MeterProvider) *figures {
	m := &figures{rows: make(map[statsKey]*StatsRow), providers: make(map[string]providerMemo), export: mp != nil}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	meter := mp.Meter("github.com/mailroute/go-mailroute/mailroute")
	// The instrument constructors return a usable no-op instrument with
	// the error; a bad name is a bug in this file, caught by the tests.
	m.recipients, _ = meter.Int64Counter(metricRecipients, metric.WithUnit("{recipient}"),
		metric.WithDescription("Recipients whose delivery attempt ended, by provider, path and outcome."))
	m.fallbacks, _ = meter.Int64Counter(metricFallbacks, metric.WithUnit("{recipient}"),
		metric.WithDescription("Recipients sent to the relay because direct delivery failed."))
	m.duration, _ = meter.Float64Histogram(metricDuration, metric.WithUnit("s"),
		metric.WithDescription("Time from routing to acceptance, per delivered recipient."))
	return m
}

// record counts a finished job: every recipient's outcome on its path.
func (mt *figures) record(ctx context.Context, j *job, provider string, took time.Duration) {
	for k := range j.rcpts {
		r := j.slot(k)
		path := PathDirect
		switch {
		case r.Fallback:
			path = PathFallback
			mt.add(ctx, provider, PathDirect, 0, Explain(r.DirectErr).Class, true, 0)
		case r.Via == Relayed:
			path = PathRelay
		}
		mt.add(ctx, provider, path, r.Status, Explain(r.Err).Class, false, took)
	}
}

// add counts one recipient: an outcome (status != 0) or a fallback.
func (mt *figures) add(ctx context.Context, provider, path string, status Status, class Class, fellBack bool, took time.Duration) {
	mt.mu.Lock()
	row := mt.rows[statsKey{provider, path}]
	if row == nil {
		row = &StatsRow{Provider: provider, Path: path, Classes: map[string]int64{}}
		mt.rows[statsKey{provider, path}] = row
	}
	if fellBack {
		row.FellBack++
		row.Classes[class.String()]++
		mt.mu.Unlock()
		if mt.export {
			mt.fallbacks.Add(ctx, 1, metric.WithAttributes(attribute.String(attrProvider, provider),
				attribute.String(attrPath, path), attribute.String(attrError, class.String())))
		}
		return
	}
	outcome := "deferred"
	switch status {
	case Delivered:
		outcome = "delivered"
		row.Delivered++
		row.Latency += took
	case Failed:
		outcome = "failed"
		row.Failed++
	default:
		row.Deferred++
	}
	if status != Delivered {
		row.Classes[class.String()]++
	}
	mt.mu.Unlock()
	if !mt.export {
		return
	}
	attrs := []attribute.KeyValue{attribute.String(attrProvider, provider), attribute.String(attrPath, path),
		attribute.String(attrOutcome, outcome)}
	if status != Delivered {
		attrs = append(attrs, attribute.String(attrError, class.String()))
	}
	mt.recipients.Add(ctx, 1, metric.WithAttributes(attrs...))
	if status == Delivered {
		mt.duration.Record(ctx, took.Seconds(), metric.WithAttributes(attrs[:2]...))
	}
}

// Stats returns the outcome figures since the Mailer started.
func (m *Mailer) Stats() Stats {
	mt := m.figures
	mt.mu.Lock()
	defer mt.mu.Unlock()
	out := Stats{Rows: make([]StatsRow, 0, len(mt.rows))}
	for _, r := range mt.rows {
		c := *r
		c.Classes = make(map[string]int64, len(r.Classes))
		for k, v := range r.Classes {
			c.Classes[k] = v
		}
		out.Rows = append(out.Rows, c)
	}
	sort.Slice(out.Rows, func(a, b int) bool {
		if out.Rows[a].Provider != out.Rows[b].Provider {
			return out.Rows[a].Provider < out.Rows[b].Provider
		}
		return out.Rows[a].Path < out.Rows[b].Path
	})
	return out
}

// catalogue is every Provider the figures name.
var catalogue = []Provider{Google, Microsoft, Yahoo, Apple, GMX, Yandex, Zoho, Mimecast, Proofpoint}

// providerOf names a destination for the figures: the provider of its
// mailbox domain or of all its MX hosts, else its MX site, else the
// domain. It never looks anything up: it reads the MX answer delivery (or
// routing) already cached.
//
// The name is remembered per domain along with the MX answer it was made
// from (the cache hands out the same answer until it changes), so a
// domain sent to again costs one map lookup, not a walk of the catalogue.
func (m *Mailer) providerOf(d *Destination) string {
	if d.IsLiteral() {
		return d.Domain
	}
	a, ok := d.mxCache().Cached(d.Domain)
	if !ok {
		a = mx.Answer{}
	}
	mt := m.figures
	var first *net.MX
	if len(a.Hosts) > 0 {
		first = a.Hosts[0]
	}
	mt.mu.Lock()
	pn, hit := mt.providers[d.Domain]
	mt.mu.Unlock()
	if hit && pn.first == first && pn.n == len(a.Hosts) {
		return pn.name
	}
	name := providerName(d.Domain, a)
	mt.mu.Lock()
	if len(mt.providers) >= maxProviderMemo {
		clear(mt.providers) // bounded: a newsletter reaches many domains
	}
	mt.providers[d.Domain] = providerMemo{first: first, n: len(a.Hosts), name: name}
	mt.mu.Unlock()
	return name
}

// maxProviderMemo bounds the domains whose provider name is remembered.
const maxProviderMemo = 4096

// providerMemo is a provider name and the MX answer it was made from.
type providerMemo struct {
	first *net.MX // the answer's first host (the cache's own, unshuffled)
	n     int
	name  string
}

// providerName is providerOf without the memo, for a domain name and its
// cached MX answer (zero when none is cached).
func providerName(domain string, a mx.Answer) string {
	for _, p := range catalogue {
		for _, dom := range p.Domains {
			if domain == strings.TrimPrefix(dom, ".") || strings.HasPrefix(dom, ".") && strings.HasSuffix(domain, dom) {
				return p.Name
			}
		}
	}
	if len(a.Hosts) == 0 {
		return domain
	}
	for _, p := range catalogue {
		all := true
		for _, h := range a.Hosts {
			if !hostHasAnySuffix(h.Host, p.MXSuffixes) {
				all = false
				break
			}
		}
		if all {
			return p.Name
		}
	}
	return siteOf(a.Hosts)
}

func hostHasAnySuffix(host string, suffixes []string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, s := range suffixes {
		if dnsname.HasSuffix(host, strings.TrimPrefix(s, ".")) {
			return true
		}
	}
	return false
}
