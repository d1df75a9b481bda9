package mailroute

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/emersion/go-sasl"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/oauth2"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// Config configures a Mailer. The zero value of every field means its
// documented default.
type Config struct {
	// Hostname is the name this host gives in EHLO when delivering direct:
	// a fully qualified name whose address has a matching PTR record. Empty:
	// the system's host name.
	Hostname string
	// Router decides each destination's route. nil: DefaultRouter.
	Router Router
	// Relay is the default relay, for Relay routes and fallback
	// that name no other. nil: none, and mail routed to it fails with a
	// clear error.
	Relay *Relay
	// Relays are further relays, by name, for routes that name one
	// (Route.Relay, Rule.Relay), for senders (SenderRelays), and as the
	// failover of another relay (Relay.Failover).
	Relays map[string]*Relay
	// SenderRelays picks the relay by the envelope sender's domain, for
	// applications that send for several domains, each with its own relay
	// account (Postfix's sender_dependent_relayhost_maps). Keys are
	// domains ("example.com") or, with a leading dot, a domain and its
	// subdomains (".example.com"); an exact key beats a suffix, and a
	// longer suffix a shorter one. Values name relays of Relays. A relay
	// the route names beats the sender's; the sender's beats Smarthost.
	SenderRelays map[string]string
	// Direct configures delivery to MX hosts.
	Direct DirectOptions
	// Resolver answers MX and address lookups. nil: the system resolver.
	// DNSServer("127.0.0.1:5353") asks one given server.
	Resolver Resolver
	// MXCacheTTL is how long MX answers (and permanent failures such as
	// NXDOMAIN) are kept. 0: 5 minutes; negative: not cached.
	MXCacheTTL time.Duration
	// MXCacheTemporaryTTL is how long temporary lookup failures are kept.
	// 0: 30 seconds; negative: not cached.
	MXCacheTemporaryTTL time.Duration
	// Concurrency bounds how many destinations one Send delivers to at
	// once (and how many queued messages one queue round attempts at
	// once). 0: defaultConcurrency, 100, Postfix's default process limit.
	//
	// Delivery to a remote MX host is mostly waiting: about 8 round trips
	// for a new session with STARTTLS, 50–300 ms each, against well under
	// a millisecond of CPU. At 100, one Send to 10,000 recipients over
	// 1,000 domains at a 50 ms round trip takes about 5.5 s (at 8 it took
	// 52 s, at 32 15 s), with a peak of about 25 MiB of heap, 210
	// goroutines and 380 sockets (the sessions in flight and the idle
	// ones kept for the next message): each destination in flight holds a
	// session and its goroutine. A personal server's Sends reach a handful
	// of domains, so the limit never binds there and the default suits it
	// too; lower it (say to 8) only on a slow uplink or a tiny machine.
	// Politeness to each receiver is MaxConnsPerHost's job, not this one's.
	Concurrency int
	// MaxConnsPerHost caps the connections open at once to one receiving
	// address or to the relay, across all Sends. 0: 2, which is what a
	// receiver expects of a small sender (Postfix opens up to 20 to one
	// destination, and large receivers throttle more than a few); raise it
	// only for a relay that asks for more.
	MaxConnsPerHost int
	// MaxMessageSize refuses larger messages before anything is sent.
	// 0: no limit of mailroute's own (servers still enforce theirs).
	MaxMessageSize int64
	// Fallback decides which direct failures are re-sent through the
	// relay. The zero value is the default policy; see FallbackPolicy.
	Fallback FallbackPolicy
	// MeterProvider receives the outcome figures as OpenTelemetry metrics
	// (instruments and attributes are listed in metrics.go's package
	// documentation and the README). nil: none are exported; Mailer.Stats
	// still has them.
	MeterProvider metric.MeterProvider
	// Learning configures the routes learned from refusals and the
	// blocked-port-25 detector. The zero value learns, with the defaults;
	// see Learning.
	Learning Learning
	// Queue keeps what Send could not deliver and retries it; nil: no
	// queue, and deferred recipients are the caller's to retry.
	// &spool.Store{Dir: …} (package mailroute/spool) is the embedded store.
	//
	// The queue's workers lease messages for 45 minutes (a store may grant
	// another duration and say so in QueuedMessage.LeaseUntil) and stop
	// every attempt when 90% of the lease's time is gone, so the outcome is
	// recorded while the lease still holds and no other worker or instance
	// can have started the same message: a tarpitting server that would
	// hold an attempt for RFC 5321's hour of stage timeouts is cut off at
	// about 40 minutes, and its recipients are deferred, saying so.
	Queue QueueStore
	// Retry is the queue's schedule; see RetryPolicy.
	Retry RetryPolicy
	// DSN sends the envelope sender an RFC 3464 delivery status
	// notification when the queue fails or gives up a recipient.
	DSN bool
	// OnEvent, when set, is called with every outcome of every attempt:
	// delivered, queued, deferred, failed, given up. It must not block.
	OnEvent func(Event)
	// now, queuePoll and queueLease are test seams: a fake clock for the
	// queue's schedule, how often its workers look for due mail, and the
	// lease they ask for. tlsrptFlush replaces rptFlushInterval.
	now         func() time.Time
	queuePoll   time.Duration
	queueLease  time.Duration
	tlsrptFlush time.Duration

	// Logger receives one line per delivery attempt. nil: nothing is
	// logged.
	Logger *slog.Logger
	// DKIM lists the DKIM signatures added to every message, once, before
	// routing, so that direct and relay deliveries carry the same
	// ones. nil: messages are not signed. One RSA and one Ed25519
	// signature is the usual pair; Check verifies the published keys.
	DKIM []DKIMSignature
	// SendMailTimeout bounds each call of SendMail (the Mailer's and the
	// package-level drop-in), which has no context to bound it: DNS,
	// connections, TLS and every transaction, fallback included. When it
	// runs out, recipients not yet delivered are Deferred with
	// context.DeadlineExceeded. 0: 2 minutes, far above a healthy
	// delivery, far below the 5 minutes a server dripping its greeting
	// could hold a call under the per-reply timeouts alone.
	SendMailTimeout time.Duration
	// Headers says which missing header fields are added before signing.
	// The zero value adds a Date and a Message-ID to the messages that are
	// signed and lack them.
	Headers HeaderOptions
}

func (c *Config) concurrency() int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	return defaultConcurrency
}

// defaultConcurrency is Config.Concurrency's zero value; see there why.
const defaultConcurrency = 100

func (c *Config) maxConnsPerHost() int {
	if c.MaxConnsPerHost > 0 {
		return c.MaxConnsPerHost
	}
	return 2
}

// defaultSendMailTimeout is Config.SendMailTimeout's zero value.
const defaultSendMailTimeout = 2 * time.Minute

func (c *Config) sendMailTimeout() time.Duration {
	if c.SendMailTimeout > 0 {
		return c.SendMailTimeout
	}
	return defaultSendMailTimeout
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return discardLogger
}

var discardLogger = slog.New(slog.DiscardHandler)

// TLSPolicy says how direct delivery uses TLS.
type TLSPolicy uint8

const (
	// Opportunistic uses STARTTLS whenever the MX host offers it, without
	// verifying the certificate (RFC 7435: unauthenticated encryption beats
	// plaintext, and most MX certificates would fail a name check). When
	// the handshake fails, the same host is retried in plaintext, as
	// Postfix and mox do.
	Opportunistic TLSPolicy = iota
	// RequireTLS demands STARTTLS with a certificate valid for the MX host
	// name. A host without it is a temporary failure; nothing is ever sent
	// in plaintext.
	RequireTLS
	// NoTLS never uses STARTTLS.
	NoTLS
)

// String returns "opportunistic", "require-tls" or "no-tls".
func (p TLSPolicy) String() string {
	switch p {
	case Opportunistic:
		return "opportunistic"
	case RequireTLS:
		return "require-tls"
	case NoTLS:
		return "no-tls"
	}
	return "TLSPolicy(" + strconv.Itoa(int(p)) + ")"
}

// Timeouts bound each stage of an SMTP session. A zero field takes the
// default, from RFC 5321 §4.5.3.2 where it gives one. Every read and write
// also ends at the context's deadline, if that comes first.
type Timeouts struct {
	Connect   time.Duration // TCP connect and implicit TLS; default 30 s
	Greeting  time.Duration // the 220 greeting; default 5 min
	Mail      time.Duration // reply to MAIL; default 5 min
	Rcpt      time.Duration // reply to each RCPT; default 5 min
	DataInit  time.Duration // the 354 reply to DATA; default 2 min
	DataBlock time.Duration // each write of message data; default 3 min
	DataFinal time.Duration // reply to the final "."; default 10 min
}

func (t Timeouts) client() smtpclient.Timeouts {
	return smtpclient.Timeouts{
		Connect: t.Connect, Greeting: t.Greeting, Mail: t.Mail, Rcpt: t.Rcpt,
		DataInit: t.DataInit, DataBlock: t.DataBlock, DataFinal: t.DataFinal,
	}
}

// DirectOptions configures delivery to MX hosts.
type DirectOptions struct {
	// Port is the SMTP port of every MX host. 0: 25.
	Port int
	// LocalAddr is the source address to send from, for hosts with several.
	// The zero value lets the system choose. When set, MX addresses of the
	// other IP family are skipped.
	LocalAddr netip.Addr
	// TLS is the STARTTLS policy. The zero value is Opportunistic.
	TLS TLSPolicy
	// TLSConfig is used for STARTTLS. nil: the system roots (verification
	// only applies under RequireTLS, MTA-STS and DANE). Its RootCAs also
	// verify MTA-STS policy hosts.
	TLSConfig *tls.Config
	// DANEResolver is the address of a validating DNS resolver the Mailer
	// trusts, such as a local Unbound on "127.0.0.1:53". Setting it turns
	// DANE (RFC 7672) on: MX and TLSA records are asked of it, and only
	// answers it marks authenticated (the AD bit) count. A destination
	// whose MX hosts publish TLSA records then gets TLS verified by them,
	// never plaintext. The resolver must be one an attacker cannot
	// impersonate — on this host, or reached over a trusted link — since
	// its AD bit is believed, not checked. "": no DANE.
	DANEResolver string
	// NoMTASTS turns MTA-STS (RFC 8461) off. By default each destination's
	// _mta-sts TXT record is looked up, its policy fetched over verified
	// HTTPS and kept for its max_age (in Config.Queue when it is a
	// StateStore, in memory otherwise), and applied: in enforce mode only
	// the MX hosts it names are used, over TLS verified for their names.
	NoMTASTS bool
	// Timeouts per stage; zero fields take RFC 5321's values.
	Timeouts Timeouts
}

func (o DirectOptions) check() error {
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("mailroute: DirectOptions.Port %d is not a port number", o.Port)
	}
	if o.TLS > NoTLS {
		return fmt.Errorf("mailroute: DirectOptions.TLS: unknown policy %v", o.TLS)
	}
	if o.DANEResolver != "" {
		if _, port, err := net.SplitHostPort(o.DANEResolver); err != nil || port == "" {
			return fmt.Errorf("mailroute: DirectOptions.DANEResolver %q: want host:port, such as 127.0.0.1:53", o.DANEResolver)
		}
	}
	if o.LocalAddr.IsValid() && o.LocalAddr.Zone() != "" {
		return fmt.Errorf("mailroute: DirectOptions.LocalAddr %v: zones are not supported", o.LocalAddr)
	}
	return nil
}

func (o DirectOptions) port() string {
	if o.Port == 0 {
		return "25"
	}
	return strconv.Itoa(o.Port)
}

// Relay describes the relay.
type Relay struct {
	// Addr is "host:port". Port 465 means implicit TLS; any other port
	// STARTTLS, which is then required. The certificate is always verified
	// against host.
	Addr string
	// ImplicitTLS forces implicit TLS on a port other than 465.
	ImplicitTLS bool
	// Username and Password authenticate to the relay with the best
	// mechanism it offers after TLS: PLAIN, then LOGIN, then CRAM-MD5.
	// They are only ever sent over a verified TLS connection.
	Username, Password string
	// TokenSource, when set, authenticates Username with OAuth 2.0
	// instead of a password, as Gmail and Microsoft 365 want: a token is
	// taken from it for each new session (so a pooled relay never sends
	// an expired one; wrap it in oauth2.ReuseTokenSource to cache tokens
	// until they expire) and sent by OAUTHBEARER (RFC 7628) or XOAUTH2,
	// whichever the relay offers. A refused token's error holds an
	// *OAuth2Error with the server's status and the scope it wants.
	TokenSource oauth2.TokenSource
	// Auth, when set, is used instead of Username and Password: any
	// go-sasl client. The same client is used for every new session, so
	// it must be reusable and hold nothing that expires: go-sasl's PLAIN
	// client is fine, but a bearer token is not (it expires within an
	// hour; use TokenSource). go-sasl has no XOAUTH2 client.
	Auth sasl.Client
	// TLSConfig is used for the relay's TLS. nil: the system roots.
	// ServerName defaults to the host in Addr.
	TLSConfig *tls.Config
	// InsecurePlaintextLoopback allows a relay on a loopback address (a
	// local Postfix, a development catcher on 127.0.0.1) to be used without
	// verified TLS: STARTTLS is used when offered, unverified, and the
	// session goes on in plaintext otherwise — credentials included, if
	// configured. New refuses it for any address that is not loopback.
	InsecurePlaintextLoopback bool
	// Failover names the relay of Config.Relays tried next when this one
	// cannot be used: connecting, the greeting, EHLO, TLS or AUTH failed
	// (it is down, or refuses the configuration), so that nothing of the
	// message was sent. Refusals of the mail itself (MAIL, RCPT, DATA) do
	// not fail over: the next relay would most likely refuse it too.
	// "": none. Chains are allowed, cycles are not.
	Failover string
	// MaxIdle is how many idle authenticated sessions are kept for reuse.
	// 0: 2; negative: none (a new session per transaction).
	MaxIdle int
	// IdleTimeout closes sessions idle for longer. 0: 60 seconds.
	IdleTimeout time.Duration
	// Timeouts per stage; zero fields take RFC 5321's values.
	Timeouts Timeouts
}

func (r *Relay) implicitTLS() bool {
	_, port, _ := net.SplitHostPort(r.Addr)
	return r.ImplicitTLS || port == "465"
}

func (r *Relay) check() error {
	host, port, err := net.SplitHostPort(r.Addr)
	if err != nil {
		return fmt.Errorf("mailroute: Relay.Addr %q: want host:port: %w", r.Addr, err)
	}
	if host == "" {
		return fmt.Errorf("mailroute: Relay.Addr %q has no host", r.Addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("mailroute: Relay.Addr %q: bad port %q", r.Addr, port)
	}
	if r.InsecurePlaintextLoopback && !isLoopbackHost(host) {
		return fmt.Errorf("mailroute: Relay.InsecurePlaintextLoopback is only allowed for a loopback address, not %q", host)
	}
	if r.Password != "" && r.Username == "" && r.Auth == nil {
		return fmt.Errorf("mailroute: Relay has a Password but no Username")
	}
	if r.TokenSource != nil {
		switch {
		case r.Username == "":
			return fmt.Errorf("mailroute: Relay.TokenSource needs the Username the token is for")
		case r.Password != "" || r.Auth != nil:
			return fmt.Errorf("mailroute: Relay has a TokenSource and also a Password or Auth; give one way to authenticate")
		}
	}
	return nil
}

// isLoopbackHost reports whether host is a loopback IP or "localhost".
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
