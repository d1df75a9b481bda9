package mailroute

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// collect reads every data point of the Mailer's instruments, keyed by
// instrument name and attributes ("name|k=v,k=v").
func collect(t *testing.T, r *sdkmetric.ManualReader) (sums map[string]int64, hist map[string]uint64) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sums, hist = map[string]int64{}, map[string]uint64{}
	key := func(name string, set attribute.Set) string {
		var parts []string
		for _, kv := range set.ToSlice() {
			parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
		}
		return name + "|" + strings.Join(parts, ",")
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					sums[key(m.Name, p.Attributes)] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					hist[key(m.Name, p.Attributes)] += p.Count
				}
			}
		}
	}
	return sums, hist
}

// TestMetricsCounts: direct deliveries, a mailbox refusal, a policy
// refusal that falls back, a greylisted deferral and a big provider
// routed to the relay each land in the right counter, and Stats agrees.
func TestMetricsCounts(t *testing.T) {
	w := newDirectWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: mixedRcptPolicy("Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org")})
	w.dns.MX("dest.test", "mx.dest.test")
	w.dns.Host("aspmx.l.google.com", "127.0.0.1")
	w.dns.MX("workspace.test", "aspmx.l.google.com")
	relay := newRelay(t, smtptest.Options{})
	reader := sdkmetric.NewManualReader()
	m := w.mailer(Config{
		Relay:         relay.relay(),
		Router:        DefaultRouter,
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		Learning:      Learning{Off: true},
	})
	send(t, m, "a@sender.test", []string{"ok1@dest.test", "ok2@dest.test", "nouser@dest.test", "blocked@dest.test", "grey@dest.test"}, testBody)
	send(t, m, "a@sender.test", []string{"x@gmail.com", "y@workspace.test"}, testBody)

	sums, hist := collect(t, reader)
	want := map[string]int64{
		"mailroute.delivery.recipients|mailroute.outcome=delivered,mailroute.path=direct,mailroute.provider=mx.dest.test":                    2,
		"mailroute.delivery.recipients|error.type=mailbox,mailroute.outcome=failed,mailroute.path=direct,mailroute.provider=mx.dest.test":    1,
		"mailroute.delivery.recipients|error.type=greylist,mailroute.outcome=deferred,mailroute.path=direct,mailroute.provider=mx.dest.test": 1,
		"mailroute.delivery.recipients|mailroute.outcome=delivered,mailroute.path=fallback,mailroute.provider=mx.dest.test":                  1,
		"mailroute.delivery.fallbacks|error.type=policy,mailroute.path=direct,mailroute.provider=mx.dest.test":                               1,
		"mailroute.delivery.recipients|mailroute.outcome=delivered,mailroute.path=relay,mailroute.provider=Google":                           2,
	}
	for k, v := range want {
		if sums[k] != v {
			t.Errorf("%s = %d, want %d", k, sums[k], v)
		}
	}
	for k, v := range sums {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected data point %s = %d", k, v)
		}
	}
	wantHist := map[string]uint64{
		"mailroute.delivery.duration|mailroute.path=direct,mailroute.provider=mx.dest.test":   2,
		"mailroute.delivery.duration|mailroute.path=fallback,mailroute.provider=mx.dest.test": 1,
		"mailroute.delivery.duration|mailroute.path=relay,mailroute.provider=Google":          2,
	}
	for k, v := range wantHist {
		if hist[k] != v {
			t.Errorf("histogram %s count = %d, want %d", k, hist[k], v)
		}
	}

	st := m.Stats()
	row := func(provider, path string) StatsRow {
		for _, r := range st.Rows {
			if r.Provider == provider && r.Path == path {
				return r
			}
		}
		t.Fatalf("no Stats row %s/%s in %+v", provider, path, st.Rows)
		return StatsRow{}
	}
	if r := row("mx.dest.test", PathDirect); r.Delivered != 2 || r.Failed != 1 || r.Deferred != 1 || r.FellBack != 1 ||
		r.Classes["mailbox"] != 1 || r.Classes["greylist"] != 1 || r.Classes["policy"] != 1 || r.Latency <= 0 {
		t.Errorf("direct row %+v", r)
	}
	if r := row("mx.dest.test", PathFallback); r.Delivered != 1 || r.FellBack != 0 {
		t.Errorf("fallback row %+v", r)
	}
	if r := row("Google", PathRelay); r.Delivered != 2 {
		t.Errorf("Google row %+v", r)
	}
	if len(st.Rows) != 3 {
		t.Errorf("%d rows: %+v", len(st.Rows), st.Rows)
	}
}

// Without a MeterProvider the figures are still kept in process.
func TestStatsWithoutMeterProvider(t *testing.T) {
	w := newDirectWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{})
	w.dns.MX("dest.test", "mx.dest.test")
	m := w.mailer(Config{})
	send(t, m, "a@sender.test", []string{"a@dest.test"}, testBody)
	if st := m.Stats(); len(st.Rows) != 1 || st.Rows[0].Delivered != 1 {
		t.Errorf("Stats = %+v", st)
	}
}
