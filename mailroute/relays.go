package mailroute

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/mailroute/go-mailroute/internal/dnsname"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// Several relays: Config.Relay is the default, Config.Relays names
// more. A job's relay is the one its route names, else its sender's
// (Config.SenderRelays), else the default — the precedence of Postfix's
// transport maps over sender_dependent_relayhost_maps over relayhost. A
// relay that cannot be reached, or refuses the configuration, hands over to
// its Failover, as mox's transports and Postfix's smtp_fallback_relay do.

// maxFailover bounds a failover chain; New refuses cycles, this is a
// second guard.
const maxFailover = 8

// namedRelays are a Mailer's relays by name and its sender map.
type namedRelays struct {
	byName map[string]*smarthost
	// senders: exact sender domains and suffixes (longest first).
	exact    map[string]*smarthost
	suffixes []senderSuffix
}

type senderSuffix struct {
	domain string
	relay  *smarthost
}

// setupRelays checks Config.Relays, the failover chains, SenderRelays and
// the relays Rules name, and makes one pool per relay.
func (m *Mailer) setupRelays(cfg *Config) error {
	nr := &m.relays
	nr.byName = make(map[string]*smarthost, len(cfg.Relays))
	names := make([]string, 0, len(cfg.Relays))
	for name := range cfg.Relays {
		names = append(names, name)
	}
	sort.Strings(names) // errors name the same relay on every run
	for _, name := range names {
		r := cfg.Relays[name]
		switch {
		case name == "":
			return errors.New(`mailroute: Config.Relays: a relay needs a name ("" is Config.Relay)`)
		case r == nil:
			return fmt.Errorf("mailroute: Config.Relays[%q] is nil", name)
		}
		if err := r.check(); err != nil {
			return fmt.Errorf("mailroute: Config.Relays[%q]: %w", name, trimPkg(err))
		}
		s := newSmarthost(r, m.hostname, cfg.maxConnsPerHost())
		s.name = name
		nr.byName[name] = s
	}
	// Failover links, checked for unknown names and cycles.
	link := func(label string, r *Relay, s *smarthost) error {
		if r.Failover == "" {
			return nil
		}
		next, ok := nr.byName[r.Failover]
		if !ok {
			return fmt.Errorf("mailroute: %s.Failover names %q, which is not in Config.Relays", label, r.Failover)
		}
		s.failover = next
		return nil
	}
	for _, name := range names {
		if err := link(fmt.Sprintf("Config.Relays[%q]", name), cfg.Relays[name], nr.byName[name]); err != nil {
			return err
		}
	}
	if m.relay != nil {
		if err := link("Config.Relay", cfg.Relay, m.relay); err != nil {
			return err
		}
	}
	for _, name := range names {
		seen := map[*smarthost]bool{}
		for s := nr.byName[name]; s != nil; s = s.failover {
			if seen[s] {
				return fmt.Errorf("mailroute: Config.Relays[%q]: the failover chain comes back to %q", name, s.name)
			}
			seen[s] = true
		}
	}

	nr.exact = make(map[string]*smarthost)
	for key, name := range cfg.SenderRelays {
		s, ok := nr.byName[name]
		if !ok {
			return fmt.Errorf("mailroute: Config.SenderRelays[%q] names %q, which is not in Config.Relays", key, name)
		}
		pat, err := dnsname.CompilePattern(key)
		if err != nil || pat.Kind == dnsname.PatternWildcard {
			if err == nil {
				err = errors.New(`"*" is Config.Relay's place`)
			}
			return fmt.Errorf("mailroute: Config.SenderRelays[%q]: %w", key, err)
		}
		if pat.Kind == dnsname.PatternSuffix {
			nr.suffixes = append(nr.suffixes, senderSuffix{domain: pat.Domain, relay: s})
		} else {
			nr.exact[pat.Domain] = s
		}
	}
	sort.Slice(nr.suffixes, func(i, j int) bool { return len(nr.suffixes[i].domain) > len(nr.suffixes[j].domain) })

	if rules, ok := cfg.Router.(Rules); ok {
		for i, r := range rules {
			if _, ok := nr.byName[r.Relay]; r.Relay != "" && !ok {
				return fmt.Errorf("mailroute: rule %d: Relay %q is not in Config.Relays", i+1, r.Relay)
			}
		}
	}
	return nil
}

// trimPkg drops the "mailroute: " of an error about to be wrapped by one
// that says it.
func trimPkg(err error) error { return errors.New(unprefixed(err.Error())) }

// forSender returns the relay of the envelope sender's domain, or nil.
func (nr *namedRelays) forSender(from string) *smarthost {
	at := strings.LastIndexByte(from, '@')
	if at < 0 || len(nr.exact)+len(nr.suffixes) == 0 {
		return nil
	}
	domain, err := dnsname.Normalize(from[at+1:])
	if err != nil {
		return nil
	}
	if s, ok := nr.exact[domain]; ok {
		return s
	}
	for _, sfx := range nr.suffixes {
		if dnsname.HasSuffix(domain, sfx.domain) {
			return sfx.relay
		}
	}
	return nil
}

// pickRelay sets the job's relay from its route and sender. j.relay holds
// the call's default on entry (Config.Relay, or SendMail's relay).
func (m *Mailer) pickRelay(j *job, route Route) *Error {
	if route.Relay != "" {
		s, ok := m.relays.byName[route.Relay]
		if !ok {
			// A Router of the user's own naming a relay New could not
			// check: a configuration error, so the mail is kept.
			return &Error{Command: "route", Err: fmt.Errorf("%w: the route names relay %q, which is not in Config.Relays", ErrNoRelay, route.Relay)}
		}
		j.relay = s
		return nil
	}
	if s := m.relays.forSender(j.from); s != nil {
		j.relay = s
	}
	return nil
}

// each calls f for every named relay.
func (nr *namedRelays) each(f func(*smarthost)) {
	for _, s := range nr.byName {
		f(s)
	}
}

// failoverError is the cause of a batch that no relay of a failover chain
// could take: the last relay's own cause, if any, and the failures of the
// relays before it.
type failoverError struct {
	cause   error // the last relay's Error.Err; may be nil
	earlier []*Error
}

func (e *failoverError) Error() string {
	var b strings.Builder
	if e.cause != nil {
		b.WriteString(unprefixed(e.cause.Error()) + "; ")
	}
	b.WriteString("after failing over from ")
	for i, x := range e.earlier {
		if i > 0 {
			b.WriteString(", then from ")
		}
		b.WriteString(x.Error())
	}
	return b.String()
}

func (e *failoverError) Unwrap() []error {
	var errs []error
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	for _, x := range e.earlier {
		errs = append(errs, x)
	}
	return errs
}

// getSession takes a session from the job's relay or, when none can be
// had, from the next relay of its failover chain. It returns the relay
// that gave the session or, failing all, the last one tried and an error
// saying what each did.
func (m *Mailer) getSession(ctx context.Context, j *job, batch []int) (*smarthost, *smtpclient.Conn, bool, *Error) {
	s := j.relay
	var earlier []*Error
	for n := 0; ; n++ {
		c, pooled, e := s.pool.get(ctx)
		if e == nil {
			return s, c, pooled, nil
		}
		if e.Host == "" {
			e.Host = s.host
		}
		if s.failover == nil || n >= maxFailover || ctx.Err() != nil {
			if len(earlier) > 0 {
				wrapped := *e
				wrapped.Err = &failoverError{cause: e.Err, earlier: earlier}
				e = &wrapped
			}
			return s, nil, false, e
		}
		m.logAttempt(j, Relayed, s.host, batch, e, noClock)
		earlier = append(earlier, e)
		s = s.failover
	}
}
