package mailroute

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtptest"
	"github.com/mailroute/go-mailroute/internal/testpki"
)

// tlsWorld is a directWorld with a CA, an HTTPS host serving MTA-STS
// policies for every mta-sts.<domain> name, and helpers to publish TLSA
// records.
type tlsWorld struct {
	*directWorld
	ca        *testpki.CA
	policySrv *httptest.Server

	mu       sync.Mutex
	policies map[string]string // domain → policy file; missing: 404
	fetches  map[string]int
}

func newTLSWorld(t *testing.T) *tlsWorld {
	w := &tlsWorld{directWorld: newDirectWorld(t), ca: testpki.New(t), policies: map[string]string{}, fetches: map[string]int{}}
	w.policySrv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		domain := strings.TrimPrefix(strings.Split(r.Host, ":")[0], "mta-sts.")
		w.mu.Lock()
		p, ok := w.policies[domain]
		w.fetches[domain]++
		w.mu.Unlock()
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(rw, r)
			return
		}
		rw.Header().Set("Content-Type", "text/plain")
		rw.Write([]byte(p))
	}))
	w.policySrv.TLS = w.ca.ServerConfig("mta-sts.dest.test", "mta-sts.other.test")
	w.policySrv.StartTLS()
	t.Cleanup(w.policySrv.Close)
	w.dns.Host("mta-sts.dest.test", "127.0.0.1")
	w.dns.Host("mta-sts.other.test", "127.0.0.1")
	return w
}

// sts publishes (or, with policy "", withdraws from the web server) a
// domain's policy under TXT id.
func (w *tlsWorld) sts(domain, id, mode string, mx ...string) {
	w.dns.Remove("_mta-sts." + domain)
	if id != "" {
		w.dns.Add(`_mta-sts.` + domain + `. TXT "v=STSv1; id=` + id + `;"`)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if mode == "" {
		delete(w.policies, domain)
		return
	}
	p := "version: STSv1\r\nmode: " + mode + "\r\n"
	for _, h := range mx {
		p += "mx: " + h + "\r\n"
	}
	w.policies[domain] = p + "max_age: 86400\r\n"
}

func (w *tlsWorld) fetched(domain string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fetches[domain]
}

// tlsa publishes a DANE-EE SPKI SHA-256 record for the certificate of a
// server configuration, at the world's port.
func (w *tlsWorld) tlsa(host string, conf *tls.Config, usage int) {
	w.dns.TLSA(host, w.port, usage, conf.Certificates[0])
}

func (w *tlsWorld) mailer(cfg Config, dane bool) *Mailer {
	cfg.Direct.TLSConfig = &tls.Config{RootCAs: w.ca.Pool()}
	if dane {
		cfg.Direct.DANEResolver = w.dns.Addr
	}
	m := w.directWorld.mailer(cfg)
	_, port, _ := strings.Cut(w.policySrv.Listener.Addr().String(), "127.0.0.1:")
	m.testPolicyPort = port
	return m
}

const tlsReqNoBody = "From: a@sender.test\r\nTLS-Required: No\r\nSubject: hi\r\n\r\nHello.\r\n"

// TestTLSPolicyScenarios is the scenario table of authenticated TLS for
// direct delivery: each row sets up the destination's DNS, MX server and
// policy host, sends one message, and asserts the recipient's status, the
// TLS that protected it, the error and what arrived.
func TestTLSPolicyScenarios(t *testing.T) {
	type setup struct {
		w    *tlsWorld
		good *tls.Config // the MX's server configuration (certificate for mx.dest.test)
	}
	for _, tt := range []struct {
		name    string
		dane    bool
		server  func(ca *testpki.CA) smtptest.Options
		prepare func(s setup)
		body    string
		status  Status
		tls     TLSProtection
		err     error
	}{
		{
			name: "DANE-EE match", dane: true,
			prepare: func(s setup) { s.w.dns.Secure("dest.test"); s.w.tlsa("mx.dest.test", s.good, 3) },
			status:  Delivered, tls: TLSDANE,
		},
		{
			name: "DANE-EE mismatch defers", dane: true,
			prepare: func(s setup) {
				s.w.dns.Secure("dest.test")
				s.w.tlsa("mx.dest.test", s.w.ca.ServerConfig("mx.dest.test"), 3) // another key
			},
			status: Deferred, tls: TLSNone, err: ErrTLSPolicy,
		},
		{
			name: "DANE with STARTTLS stripped defers", dane: true,
			server: func(*testpki.CA) smtptest.Options { return smtptest.Options{} },
			prepare: func(s setup) {
				s.w.dns.Secure("dest.test")
				s.w.tlsa("mx.dest.test", s.good, 3)
			},
			status: Deferred, err: ErrTLSPolicy,
		},
		{
			name: "DANE-TA through the CA", dane: true,
			prepare: func(s setup) {
				s.w.dns.Secure("dest.test")
				sum := sha256.Sum256(s.w.ca.Cert.Raw)
				s.w.dns.Add("_" + strconv.Itoa(s.w.port) + "._tcp.mx.dest.test. TLSA 2 0 1 " + hex.EncodeToString(sum[:]))
			},
			server: func(ca *testpki.CA) smtptest.Options {
				conf := ca.ServerConfig("mx.dest.test")
				c := conf.Certificates[0]
				c.Certificate = append(c.Certificate, ca.Cert.Raw) // RFC 7672 §3.1.2: the server sends its TA
				conf.Certificates = []tls.Certificate{c}
				return smtptest.Options{TLS: conf}
			},
			status: Delivered, tls: TLSDANE,
		},
		{
			name: "unsigned TLSA ignored", dane: true,
			prepare: func(s setup) {
				s.w.tlsa("mx.dest.test", s.w.ca.ServerConfig("mx.dest.test"), 3) // would mismatch
			},
			status: Delivered, tls: TLSUnverified,
		},
		{
			name: "signed MX, TLSA in an unsigned zone ignored", dane: true,
			prepare: func(s setup) {
				s.w.dns.Secure("dest.test") // the MX answer is authenticated…
				s.w.dns.Remove("dest.test").MX("dest.test", "mx.plain.test").Host("mx.plain.test", "127.0.0.1")
				s.w.tlsa("mx.plain.test", s.w.ca.ServerConfig("mx.plain.test"), 3) // …its host's TLSA is not
			},
			status: Delivered, tls: TLSUnverified,
		},
		{
			name: "only unusable TLSA: TLS without authentication", dane: true,
			prepare: func(s setup) {
				s.w.dns.Secure("dest.test")
				s.w.tlsa("mx.dest.test", s.good, 1) // PKIX-EE: unusable for SMTP
			},
			status: Delivered, tls: TLSUnverified,
		},
		{
			name: "TLSA lookup bogus (SERVFAIL) defers", dane: true,
			prepare: func(s setup) {
				s.w.dns.Secure("dest.test")
				s.w.dns.ServFail("_" + strconv.Itoa(s.w.port) + "._tcp.mx.dest.test")
			},
			status: Deferred, err: ErrTLSPolicy,
		},
		{
			name: "DANE wins over MTA-STS", dane: true,
			prepare: func(s setup) {
				s.w.dns.Secure("dest.test")
				s.w.tlsa("mx.dest.test", s.good, 3)
				s.w.sts("dest.test", "1", "enforce", "mx.elsewhere.test")
			},
			status: Delivered, tls: TLSDANE,
		},
		{
			name: "TLS-Required: No delivers despite a DANE mismatch", dane: true,
			prepare: func(s setup) {
				s.w.dns.Secure("dest.test")
				s.w.tlsa("mx.dest.test", s.w.ca.ServerConfig("mx.dest.test"), 3)
			},
			body:   tlsReqNoBody,
			status: Delivered, tls: TLSUnverified,
		},
		{
			name:    "MTA-STS enforce, matching MX",
			prepare: func(s setup) { s.w.sts("dest.test", "1", "enforce", "mx.dest.test") },
			status:  Delivered, tls: TLSMTASTS,
		},
		{
			name:    "MTA-STS enforce, wildcard MX",
			prepare: func(s setup) { s.w.sts("dest.test", "1", "enforce", "*.dest.test") },
			status:  Delivered, tls: TLSMTASTS,
		},
		{
			name:    "MTA-STS enforce, MX not in the policy",
			prepare: func(s setup) { s.w.sts("dest.test", "1", "enforce", "mx.elsewhere.test") },
			status:  Deferred, err: ErrTLSPolicy,
		},
		{
			name:    "MTA-STS enforce, certificate for another name",
			server:  func(ca *testpki.CA) smtptest.Options { return smtptest.Options{TLS: ca.ServerConfig("mx.other.test")} },
			prepare: func(s setup) { s.w.sts("dest.test", "1", "enforce", "mx.dest.test") },
			status:  Deferred, err: ErrTLSPolicy,
		},
		{
			name:    "MTA-STS enforce, STARTTLS stripped",
			server:  func(*testpki.CA) smtptest.Options { return smtptest.Options{} },
			prepare: func(s setup) { s.w.sts("dest.test", "1", "enforce", "mx.dest.test") },
			status:  Deferred, err: ErrTLSPolicy,
		},
		{
			name:    "MTA-STS testing, MX not in the policy, delivers",
			prepare: func(s setup) { s.w.sts("dest.test", "1", "testing", "mx.elsewhere.test") },
			status:  Delivered, tls: TLSUnverified,
		},
		{
			name:    "MTA-STS testing, bad certificate, delivers",
			server:  func(ca *testpki.CA) smtptest.Options { return smtptest.Options{TLS: ca.ServerConfig("mx.other.test")} },
			prepare: func(s setup) { s.w.sts("dest.test", "1", "testing", "mx.dest.test") },
			status:  Delivered, tls: TLSUnverified,
		},
		{
			name: "MTA-STS policy host unreachable: no policy",
			prepare: func(s setup) {
				s.w.sts("dest.test", "1", "enforce", "mx.elsewhere.test")
				s.w.dns.Remove("mta-sts.dest.test").Host("mta-sts.dest.test", "127.0.0.9") // nothing listens
			},
			status: Delivered, tls: TLSUnverified,
		},
		{
			name:    "MTA-STS policy not found (404): no policy",
			prepare: func(s setup) { s.w.sts("dest.test", "1", "") },
			status:  Delivered, tls: TLSUnverified,
		},
		{
			name:    "MTA-STS mode none",
			prepare: func(s setup) { s.w.sts("dest.test", "1", "none") },
			status:  Delivered, tls: TLSUnverified,
		},
		{
			name:    "TLS-Required: No delivers outside an MTA-STS policy",
			prepare: func(s setup) { s.w.sts("dest.test", "1", "enforce", "mx.elsewhere.test") },
			body:    tlsReqNoBody,
			status:  Delivered, tls: TLSUnverified,
		},
		{
			name:    "opportunistic without any policy",
			prepare: func(s setup) {},
			status:  Delivered, tls: TLSUnverified,
		},
		{
			name:    "plaintext without any policy",
			server:  func(*testpki.CA) smtptest.Options { return smtptest.Options{} },
			prepare: func(s setup) {},
			status:  Delivered, tls: TLSNone,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newTLSWorld(t)
			good := w.ca.ServerConfig("mx.dest.test")
			opts := smtptest.Options{TLS: good}
			if tt.server != nil {
				opts = tt.server(w.ca)
				if opts.TLS != nil {
					good = opts.TLS
				}
			}
			srv := w.mx("mx.dest.test", "127.0.0.1", opts)
			w.dns.MX("dest.test", "mx.dest.test")
			tt.prepare(setup{w: w, good: good})
			m := w.mailer(Config{}, tt.dane)
			body := tt.body
			if body == "" {
				body = testBody
			}
			res, _ := send(t, m, "a@sender.test", []string{"b@dest.test"}, body)
			r := wantStatus(t, res, "b@dest.test", tt.status)
			if r.TLS != tt.tls {
				t.Errorf("TLS %v, want %v", r.TLS, tt.tls)
			}
			if tt.err != nil && !errors.Is(r.Err, tt.err) {
				t.Errorf("err %v, want %v", r.Err, tt.err)
			}
			if got, want := len(srv.Messages()), map[bool]int{true: 1, false: 0}[tt.status == Delivered]; got != want {
				t.Errorf("%d messages arrived, want %d", got, want)
			}
			if tt.status != Delivered && Classify(r.Err) == ClassNone {
				t.Errorf("no class for %v", r.Err)
			}
		})
	}
}

// A policy failure is not sent to the relay unless
// FallbackPolicy.OnTLSPolicy says so.
func TestTLSPolicyFallback(t *testing.T) {
	for _, on := range []bool{false, true} {
		w := newTLSWorld(t)
		mx := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{TLS: w.ca.ServerConfig("mx.dest.test")})
		w.dns.MX("dest.test", "mx.dest.test")
		w.sts("dest.test", "1", "enforce", "mx.elsewhere.test")
		relay := smtptest.Start(t, smtptest.Options{TLS: w.ca.ServerConfig("127.0.0.1")})
		m := w.mailer(Config{
			Relay:    &Relay{Addr: relay.Addr, TLSConfig: &tls.Config{RootCAs: w.ca.Pool()}},
			Fallback: FallbackPolicy{OnTLSPolicy: on},
		}, false)
		res, _ := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
		r := res.Recipients[0]
		if on {
			if r.Status != Delivered || !r.Fallback || r.TLS != TLSRelay || !errors.Is(r.DirectErr, ErrTLSPolicy) {
				t.Errorf("OnTLSPolicy: %+v", r)
			}
		} else if r.Status != Deferred || r.Fallback || len(relay.Messages()) != 0 {
			t.Errorf("default: %+v, %d at the relay", r, len(relay.Messages()))
		}
		if len(mx.Messages()) != 0 || mx.Connections() != 0 {
			t.Errorf("the MX outside the policy got %d connections", mx.Connections())
		}
	}
}

// The policy cache: fetched once, kept for max_age when the TXT record
// and the policy host go away, refetched when the id changes, forgotten
// when it expires.
func TestMTASTSCache(t *testing.T) {
	w := newTLSWorld(t)
	srv := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{TLS: w.ca.ServerConfig("mx.dest.test")})
	w.dns.MX("dest.test", "mx.dest.test")
	w.sts("dest.test", "1", "enforce", "mx.elsewhere.test")
	clock := newFakeClock()
	m := w.mailer(Config{now: clock.Now}, false)
	try := func(want Status, wantTLS TLSProtection) {
		t.Helper()
		res, _ := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
		r := wantStatus(t, res, "b@dest.test", want)
		if r.TLS != wantTLS {
			t.Errorf("TLS %v, want %v", r.TLS, wantTLS)
		}
	}
	try(Deferred, TLSNone)
	try(Deferred, TLSNone)
	if n := w.fetched("dest.test"); n != 1 {
		t.Errorf("%d fetches for two messages, want 1", n)
	}
	if n := w.dns.Queries("_mta-sts.dest.test", "TXT"); n != 1 {
		t.Errorf("%d TXT queries for two messages, want 1 (rechecked every %v)", n, stsRecheck)
	}

	// The TXT record and the policy go away: the cached policy holds for
	// its max_age (RFC 8461 §5.1), so a stripped record downgrades nothing.
	w.sts("dest.test", "", "")
	clock.Advance(stsRecheck + time.Second)
	try(Deferred, TLSNone)

	// A new id: the policy is fetched again, and the new one applies.
	w.sts("dest.test", "2", "enforce", "mx.dest.test")
	clock.Advance(stsRecheck + time.Second)
	try(Delivered, TLSMTASTS)
	if n := w.fetched("dest.test"); n != 2 {
		t.Errorf("%d fetches after the id changed, want 2", n)
	}

	// Expired: max_age (a day) passes with no record and no policy host.
	w.sts("dest.test", "", "")
	clock.Advance(25 * time.Hour)
	try(Delivered, TLSUnverified)
	if len(srv.Messages()) != 2 {
		t.Errorf("%d messages arrived, want 2", len(srv.Messages()))
	}
}

// REQUIRETLS (RFC 8689) on both paths: only over DANE, MTA-STS or the
// verified relay, only to a server that offers it, with the MAIL
// parameter; otherwise deferred into the queue, with the mark (the
// retries: TestREQUIRETLSQueued).
func TestREQUIRETLS(t *testing.T) {
	for _, tt := range []struct {
		name      string
		offer     bool   // the MX offers REQUIRETLS
		policy    string // "sts", "" (none)
		relay     bool   // the relay delivers (fallback)
		relayOffr bool
		status    Status
		tls       TLSProtection
		at        string // "mx", "relay", ""
	}{
		{"MTA-STS to a server offering it", true, "sts", false, false, Delivered, TLSMTASTS, "mx"},
		{"MTA-STS to a server not offering it", false, "sts", false, false, Queued, TLSNone, ""},
		{"no policy: opportunistic TLS is not enough", true, "", false, false, Queued, TLSNone, ""},
		{"no policy, the verified relay offering it", true, "", true, true, Delivered, TLSRelay, "relay"},
		{"no policy, the relay not offering it", true, "", true, false, Queued, TLSNone, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newTLSWorld(t)
			mx := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{TLS: w.ca.ServerConfig("mx.dest.test"), EnableREQUIRETLS: tt.offer})
			w.dns.MX("dest.test", "mx.dest.test")
			if tt.policy == "sts" {
				w.sts("dest.test", "1", "enforce", "mx.dest.test")
			}
			cfg := Config{Queue: newMemQueue()}
			var relay *smtptest.Server
			if tt.relay {
				relay = smtptest.Start(t, smtptest.Options{TLS: w.ca.ServerConfig("127.0.0.1"), EnableREQUIRETLS: tt.relayOffr})
				cfg.Relay = &Relay{Addr: relay.Addr, TLSConfig: &tls.Config{RootCAs: w.ca.Pool()}}
			}
			m := w.mailer(cfg, false)
			ctx, cancel := context.WithTimeout(WithREQUIRETLS(context.Background()), 20*time.Second)
			defer cancel()
			res, _ := m.Send(ctx, "a@sender.test", []string{"b@dest.test"}, strings.NewReader(tlsReqNoBody))
			r := wantStatus(t, res, "b@dest.test", tt.status)
			if r.TLS != tt.tls {
				t.Errorf("TLS %v, want %v", r.TLS, tt.tls)
			}
			if tt.status != Delivered && !errors.Is(r.Err, ErrREQUIRETLS) {
				t.Errorf("err %v, want ErrREQUIRETLS", r.Err)
			}
			var got []*smtptest.Message
			switch tt.at {
			case "mx":
				got = mx.Messages()
			case "relay":
				got = relay.Messages()
			}
			if len(got) != map[bool]int{true: 1, false: 0}[tt.at != ""] {
				t.Fatalf("%d messages at %q", len(got), tt.at)
			}
			if len(got) == 1 && !got[0].MailOpts.RequireTLS {
				t.Error("sent without the REQUIRETLS MAIL parameter")
			}
			if tt.at != "mx" && len(mx.Messages()) != 0 {
				t.Error("the MX got the message")
			}
			list, err := m.QueueList(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.status == Queued]; len(list) != want {
				t.Fatalf("%d messages queued, want %d", len(list), want)
			}
			if len(list) == 1 && !list[0].RequireTLS {
				t.Error("queued without the REQUIRETLS mark")
			}
		})
	}
}

// A policy learned by one Mailer is used by the next one on the same
// store without a fetch: a restart does not reopen the window RFC 8461
// §5.1 closes with caching.
func TestMTASTSPolicyPersists(t *testing.T) {
	w := newTLSWorld(t)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{TLS: w.ca.ServerConfig("mx.dest.test")})
	w.dns.MX("dest.test", "mx.dest.test")
	w.sts("dest.test", "1", "enforce", "mx.elsewhere.test")
	store := newMemQueue() // a queue that keeps state, as the spool and River stores do
	for i := range 2 {
		m := w.mailer(Config{Queue: store}, false)
		res, _ := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
		if r := res.Recipients[0]; !errors.Is(r.Err, ErrTLSPolicy) {
			t.Errorf("mailer %d: %v, want ErrTLSPolicy", i, r.Err)
		}
		m.Close()
		if i == 0 {
			w.sts("dest.test", "1", "") // the policy host goes away; the TXT id stays
		}
	}
	if n := w.fetched("dest.test"); n != 1 {
		t.Errorf("%d fetches, want 1: the second Mailer should have read the store", n)
	}
	if v, ok, _ := store.GetState(context.Background(), stsNamespace, "dest.test", time.Now()); !ok || !strings.Contains(string(v), "mx.elsewhere.test") {
		t.Errorf("stored policy %q", v)
	}
}

// A validating resolver that does not answer defers the destination: what
// it would have said is unknown, and "no TLSA" is the guess an attacker
// wants. Nothing is dialled, and the error is a DNS one, not for the relay.
func TestDANEResolverDownDefers(t *testing.T) {
	w := newTLSWorld(t)
	srv := w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{TLS: w.ca.ServerConfig("mx.dest.test")})
	w.dns.MX("dest.test", "mx.dest.test")
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close() // bound, never answers
	m := w.mailer(Config{Direct: DirectOptions{DANEResolver: dead.LocalAddr().String()}}, false)
	m.dane.Timeout = 200 * time.Millisecond
	res, _ := send(t, m, "a@sender.test", []string{"b@dest.test"}, testBody)
	r := wantStatus(t, res, "b@dest.test", Deferred)
	if Classify(r.Err) != ClassDNS || srv.Connections() != 0 {
		t.Errorf("class %v, %d connections: %v", Classify(r.Err), srv.Connections(), r.Err)
	}
}
