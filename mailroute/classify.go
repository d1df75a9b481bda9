package mailroute

import (
	"errors"
	"strconv"

	"github.com/mailroute/go-mailroute/internal/mx"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// Class is what kind of failure an error is, for deciding what to do next:
// retry, bounce, or try the relay.
type Class uint8

const (
	// ClassNone: no error.
	ClassNone Class = iota
	// ClassMailbox: the recipient's mailbox is the problem (x.1.x, x.2.x:
	// no such user, mailbox full or disabled). The relay cannot fix it.
	ClassMailbox
	// ClassMessage: the message itself (x.3.x, x.6.x: too large, bad
	// content or encoding, a virus, SMTPUTF8 needed). The relay cannot fix
	// it.
	ClassMessage
	// ClassPolicy: the receiver refused the sender: reputation, block
	// lists, "unsolicited", SPF/DKIM/DMARC/reverse DNS failures, or a 5.7.x
	// refusal. A 4.7.x reply is policy only with a marker of reputation,
	// authentication or the client host in its text. A reputable relay is
	// the fix.
	ClassPolicy
	// ClassGreylist: greylisting; retrying from the same IP is what passes.
	ClassGreylist
	// ClassTemporary: any other temporary failure (4xx, a connection lost
	// after the end of data, whose outcome is unknown).
	ClassTemporary
	// ClassConnection: no SMTP conversation could be had: refused, timed
	// out, unreachable (port 25 blocked), a failed or required-but-missing
	// TLS, a 421 greeting.
	ClassConnection
	// ClassDNS: the destination's DNS: NXDOMAIN, null MX, SERVFAIL.
	ClassDNS
	// ClassConfig: the relay configuration: credentials refused, TLS
	// verification failed, no relay configured.
	ClassConfig
	// ClassPermanent: any other permanent failure.
	ClassPermanent
)

var classNames = [...]string{"none", "mailbox", "message", "policy", "greylist", "temporary", "connection", "dns", "config", "permanent"}

// String returns the class's name, e.g. "policy".
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// Verdict is a classification with the evidence that decided it.
type Verdict struct {
	// Class is what kind of failure it is.
	Class Class
	// Marker, when the reply's text decided, is the words that did, as
	// they appear in the reply (e.g. "blocked using zen.spamhaus.org",
	// "S3150", "Greylisted"). Echoed addresses, host names, URLs and
	// bracketed tokens are never markers.
	Marker string
	// Code, when the reply's codes decided, is the code that did: the
	// enhanced status code ("5.1.1") or, without one, the reply code
	// ("550").
	Code string
	// Why is the evidence when no reply decided: a connection, DNS or
	// configuration failure ("connection refused", "null MX").
	Why string
}

// String formats the verdict as the class and its evidence, e.g.
// `policy: "blocked using zen.spamhaus.org"` or `mailbox: 5.1.1`.
func (v Verdict) String() string {
	s := v.Class.String()
	switch {
	case v.Marker != "":
		return s + ": " + strconv.Quote(v.Marker)
	case v.Code != "":
		return s + ": " + v.Code
	case v.Why != "":
		return s + ": " + v.Why
	}
	return s
}

// Classify says what kind of failure err is: Explain(err).Class.
func Classify(err error) Class { return Explain(err).Class }

// Explain classifies err and says why. It reads the *Error's reply code,
// its enhanced status code (RFC 3463) and, for what servers signal only in
// words — reputation, block lists, authentication, greylisting — the
// reply's own text, leaving out what the server echoes (addresses, host
// names, URLs, bracketed tokens), so that a recipient called
// nospam@example.org or a host called antispam.example.net decides
// nothing. Use it on a RecipientResult's Err or DirectErr.
func Explain(err error) Verdict {
	if err == nil {
		return Verdict{Class: ClassNone}
	}
	switch {
	case errors.Is(err, ErrRelayAuth):
		return Verdict{Class: ClassConfig, Why: "relay authentication failed"}
	case errors.Is(err, ErrRelayTLS):
		return Verdict{Class: ClassConfig, Why: "relay TLS failed"}
	case errors.Is(err, ErrNoRelay):
		return Verdict{Class: ClassConfig, Why: "no relay configured"}
	case errors.Is(err, mx.ErrNullMX):
		return Verdict{Class: ClassDNS, Why: "null MX"}
	case errors.Is(err, mx.ErrNoSuchDomain):
		return Verdict{Class: ClassDNS, Why: "no such domain"}
	case errors.Is(err, mx.ErrTemporary):
		return Verdict{Class: ClassDNS, Why: "DNS lookup failed temporarily"}
	case errors.Is(err, smtpclient.ErrSizeExceeded):
		return Verdict{Class: ClassMessage, Why: "message larger than the server's SIZE"}
	case errors.Is(err, smtpclient.ErrSMTPUTF8Unsupported):
		return Verdict{Class: ClassMessage, Why: "SMTPUTF8 needed"}
	case errors.Is(err, smtpclient.ErrConnectionLost):
		return Verdict{Class: ClassTemporary, Why: "connection lost after the end of data"}
	case errors.Is(err, ErrTLSRequired), errors.Is(err, smtpclient.ErrTLSFailed), errors.Is(err, smtpclient.ErrTLSUnavailable):
		return Verdict{Class: ClassConnection, Why: "TLS failed"}
	}
	var e *Error
	if !errors.As(err, &e) {
		return Verdict{Class: ClassTemporary, Why: "not a delivery error"}
	}
	if e.Code == 0 {
		switch e.Command {
		case "DNS":
			return Verdict{Class: ClassDNS, Why: "DNS lookup failed"}
		case "route":
			return Verdict{Class: ClassTemporary, Why: "no route"}
		}
		if e.Permanent {
			return Verdict{Class: ClassPermanent, Why: "permanent local failure"}
		}
		return Verdict{Class: ClassConnection, Why: connectWhy(e)}
	}
	return explainReply(e.Code, e.Enhanced, e.Message, e.Command)
}

// connectWhy names a failure to hold an SMTP conversation.
func connectWhy(e *Error) string {
	switch kind := connectFailure(e); kind {
	case "":
		return "no SMTP conversation"
	default:
		return "connect: " + kind
	}
}

// FallbackPolicy decides when a recipient that direct delivery could not
// reach is re-sent through the relay in the same Send. The zero value
// is the default: fall back on connection failures (no MX host could be
// reached at all: port 25 blocked, every host down) and on policy or
// reputation refusals; never on mailbox, message or DNS failures, which the
// relay cannot fix, nor on greylisting, which passes by retrying from the
// same address. Without a relay nothing falls back.
type FallbackPolicy struct {
	// Never turns fallback off.
	Never bool
	// OnGreylist also falls back when the direct attempt was greylisted.
	OnGreylist bool
	// OnTLSPolicy also falls back when the destination's DANE or MTA-STS
	// policy could not be met (ErrTLSPolicy). Off by default: the relay's
	// own TLS is verified, but how it then reaches the destination is
	// its business, and a policy that fails is more often an attack or a
	// misconfiguration to be noticed than a fault to route around.
	OnTLSPolicy bool
	// Decide, when set, replaces the classes above: it is given the
	// direct failure and says whether to try the relay.
	Decide func(err error) bool
}

// ShouldFallback reports whether a recipient whose direct delivery failed
// with err goes to the relay.
func (p FallbackPolicy) ShouldFallback(err error) bool {
	switch {
	case err == nil || p.Never:
		return false
	case p.Decide != nil:
		return p.Decide(err)
	case errors.Is(err, ErrTLSPolicy):
		return p.OnTLSPolicy
	case errors.Is(err, ErrREQUIRETLS):
		return true // the verified relay may offer REQUIRETLS
	}
	switch Classify(err) {
	case ClassConnection, ClassPolicy:
		return true
	case ClassGreylist:
		return p.OnGreylist
	}
	return false
}
