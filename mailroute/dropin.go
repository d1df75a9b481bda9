package mailroute

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"reflect"
	"sync"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// SendMail sends msg with the signature of net/smtp's SendMail, so that an
// existing call site changes only its receiver:
//
//	err := smtp.SendMail("smtp.relay.example:587", auth, from, to, msg)
//	err := m.SendMail("smtp.relay.example:587", auth, from, to, msg)
//
// Each recipient is routed as by Send: the big providers go through the
// relay, everyone else direct to their MX hosts, and the relay is the
// fallback when direct delivery fails in a way it can fix.
//
// When Config.Relay is nil, addr and a name that relay for this call.
// Sessions to it are pooled per addr and Auth (Auths with equal contents
// count as one, so creating a new smtp.PlainAuth per call still reuses the
// sessions) and closed by Close. The relay is reached the way a relay
// always is, which is stricter than net/smtp, because the relay sees the
// credentials and every message routed to it:
//
//   - port 465: TLS from the first byte, verified against the host in addr;
//   - any other port: STARTTLS, which must be offered and verified against
//     that host. net/smtp goes on in plaintext when STARTTLS is missing;
//     this fails with ErrRelayTLS instead, and nothing is sent;
//   - except a loopback addr ("localhost", 127.0.0.1, ::1 — a local
//     Postfix, often used with a nil Auth): STARTTLS when offered,
//     unverified, plaintext otherwise, as with
//     Relay.InsecurePlaintextLoopback.
//
// a may be nil for a relay that needs no authentication. Otherwise it is
// asked exactly as net/smtp asks it, with a ServerInfo holding the host in
// addr, whether the session is really encrypted, and the mechanisms the
// relay advertises, so smtp.PlainAuth keeps its own rule of never sending
// the password in clear except to localhost. Because sessions are pooled, a
// is used for each new session, possibly from several goroutines at once
// when SendMail is called concurrently: net/smtp's PlainAuth and
// CRAMMD5Auth, like any Auth without state, are fine.
//
// When Config.Relay is set, addr and a are ignored: the configured relay
// is used, as by Send.
//
// The call is bounded as a whole by Config.SendMailTimeout (2 minutes by
// default), since it has no context: a relay or MX host that drips its
// replies cannot hold it longer.
//
// The error is nil exactly when every recipient was delivered; otherwise it
// joins the per-recipient errors (see Send). Send gives the per-recipient
// Result as well.
func (m *Mailer) SendMail(addr string, a smtp.Auth, from string, to []string, msg []byte) error {
	relay := m.relay
	if m.cfg.Relay == nil {
		var err error
		if relay, err = m.adhocRelay(addr, a); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.sendMailTimeout())
	defer cancel()
	_, err := m.send(ctx, from, to, bytes.NewReader(msg), relay)
	return err
}

// maxAdhocRelays bounds the relay pools SendMail keeps; the least recently
// used one is closed to make room. A program uses one or two relays: more
// means Auths that never compare equal, whose pools would otherwise pile up.
const maxAdhocRelays = 16

// adhocRelays are the relays SendMail was given, each with its pool of
// sessions, most recently used last.
type adhocRelays struct {
	mu     sync.Mutex
	relays []*adhocRelay

	// Test seams: the TLS configuration of every relay (nil: the system
	// roots) and the dialer (nil: net.Dialer), so that tests can verify a
	// relay named "relay.test" that listens on loopback.
	tlsConfig *tls.Config
	dialer    smtpclient.Dialer
}

type adhocRelay struct {
	addr string
	auth smtp.Auth
	s    *smarthost
}

// adhocRelay returns SendMail's relay for addr and a, making it on first
// use.
func (m *Mailer) adhocRelay(addr string, a smtp.Auth) (*smarthost, error) {
	ar := &m.adhoc
	var evicted *smarthost
	defer func() {
		if evicted != nil {
			ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			defer cancel()
			evicted.close(ctx)
		}
	}()
	ar.mu.Lock()
	defer ar.mu.Unlock()
	// Checked under the lock that Close takes to close the pools, so that
	// no pool is made after Close has closed them.
	select {
	case <-m.closed:
		return nil, ErrClosed
	default:
	}
	for i, r := range ar.relays {
		if r.addr == addr && sameAuth(r.auth, a) {
			copy(ar.relays[i:], ar.relays[i+1:])
			ar.relays[len(ar.relays)-1] = r
			return r.s, nil
		}
	}
	s, err := m.newAdhocRelay(addr, a)
	if err != nil {
		return nil, err
	}
	if len(ar.relays) >= maxAdhocRelays {
		evicted = ar.relays[0].s
		ar.relays = append(ar.relays[:0], ar.relays[1:]...)
	}
	ar.relays = append(ar.relays, &adhocRelay{addr: addr, auth: a, s: s})
	return s, nil
}

// reap ends the sessions idle past their time in every pool.
func (ar *adhocRelays) reap() {
	ar.mu.Lock()
	relays := append([]*adhocRelay(nil), ar.relays...)
	ar.mu.Unlock()
	for _, r := range relays {
		r.s.pool.reap()
	}
}

// close closes every pool; sessions in use are closed when put back.
func (ar *adhocRelays) close(ctx context.Context) {
	ar.mu.Lock()
	relays := ar.relays
	ar.relays = nil
	ar.mu.Unlock()
	for _, r := range relays {
		r.s.close(ctx)
	}
}

// closeTimeout bounds the QUITs that closing a pool sends.
const closeTimeout = 10 * time.Second

// sameAuth reports whether two Auths authenticate alike: the same value, or
// values of one type with equal contents (two smtp.PlainAuth calls with the
// same arguments), so that a program making a new Auth per call still
// reuses its sessions.
func sameAuth(x, y smtp.Auth) bool {
	return reflect.DeepEqual(x, y)
}

// newAdhocRelay makes the relay for a SendMail relay.
func (m *Mailer) newAdhocRelay(addr string, a smtp.Auth) (*smarthost, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("mailroute: SendMail: addr %q: want host:port: %w", addr, err)
	}
	r := &Relay{
		Addr:      addr,
		TLSConfig: m.adhoc.tlsConfig,
		// A local relay (Postfix on :25, a development catcher) often
		// offers no TLS at all, and net/smtp users reach it so.
		InsecurePlaintextLoopback: isLoopbackHost(host) && port != "465",
	}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("mailroute: SendMail: %w", err)
	}
	s := newSmarthost(r, m.hostname, m.cfg.maxConnsPerHost())
	s.cfg.Dialer = m.adhoc.dialer
	if a != nil {
		s.cfg.AuthFor = netSMTPAuth(a, host)
	}
	return s, nil
}

// netSMTPAuth adapts a net/smtp Auth to a session's SASL exchange. It is
// asked at AUTH time, as net/smtp's Client.Auth asks it: with the relay's
// host name, the session's real TLS state and the advertised mechanisms.
// Start runs then, so that an Auth refusing the session (PlainAuth without
// TLS to anything but localhost) stops it before AUTH is written.
func netSMTPAuth(a smtp.Auth, host string) func(tls bool, mechanisms []string) (sasl.Client, error) {
	return func(tls bool, mechanisms []string) (sasl.Client, error) {
		mech, ir, err := a.Start(&smtp.ServerInfo{Name: host, TLS: tls, Auth: mechanisms})
		if err != nil {
			return nil, fmt.Errorf("net/smtp Auth: %w", err)
		}
		if len(ir) == 0 {
			// net/smtp sends "AUTH mech" for an empty response too, never
			// the "=" of an empty initial response (RFC 4954 §4).
			ir = nil
		}
		return &netSMTPClient{a: a, mech: mech, ir: ir}, nil
	}
}

// netSMTPClient is a started net/smtp Auth as a sasl.Client.
type netSMTPClient struct {
	a    smtp.Auth
	mech string
	ir   []byte
}

func (c *netSMTPClient) Start() (string, []byte, error) { return c.mech, c.ir, nil }

// Next answers a 334 challenge: net/smtp's "more" is always true here,
// since the exchange ends at the server's 235 without asking the Auth.
func (c *netSMTPClient) Next(challenge []byte) ([]byte, error) {
	return c.a.Next(challenge, true)
}

// SendMail is Mailer.SendMail on a default Mailer, with net/smtp's
// signature, so that a program can migrate by changing an import:
//
//	err := mailroute.SendMail("smtp.relay.example:587", auth, from, to, msg)
//
// addr and a name the relay, as for Mailer.SendMail; the big providers go
// through it and everyone else gets mail direct from this host. The default
// Mailer is made on first use with DefaultRouter and the system resolver.
// Its EHLO name is derived as `hostname -f` does: the system host name when
// it is fully qualified, else the name its address maps back to, else the
// address literal of the outbound address; it says which, once, through
// log/slog's default logger.
//
// Direct delivery needs what any mail server needs. The host name must be
// a fully qualified name whose address has a matching PTR record, or many
// receivers refuse the mail. Outbound connections to port 25 must be
// allowed: many cloud and residential networks block them, and then every
// direct recipient waits for its connection attempts to fail before the
// relay takes it as fallback. Where either is missing, make a Mailer with
// New and a Router that sends everything to the relay.
//
// Each call is bounded by the default SendMailTimeout, 2 minutes.
//
// The default Mailer is never closed; its idle relay sessions end when the
// relay times them out or the program exits.
func SendMail(addr string, a smtp.Auth, from string, to []string, msg []byte) error {
	m, err := defaultMailer()
	if err != nil {
		return err
	}
	return m.SendMail(addr, a, from, to, msg)
}

// defaultMailer makes the Mailer of the package-level SendMail once.
var defaultMailer = sync.OnceValues(func() (*Mailer, error) {
	return newDefaultMailer(systemHostnameSources, slog.Default())
})
