package mailroute

import (
	"errors"
	"strings"

	"github.com/mailroute/go-mailroute/internal/mx"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// Class is what kind of failure an error is, for deciding what to do next:
// retry, bounce, or try the smarthost.
type Class uint8

const (
	// ClassNone: no error.
	ClassNone Class = iota
	// ClassMailbox: the recipient's mailbox is the problem (x.1.x, x.2.x:
	// no such user, mailbox full or disabled). The relay cannot fix it.
	ClassMailbox
	// ClassMessage: the message itself (x.3.x, x.6.x: too large, bad
	// content or encoding, SMTPUTF8 needed). The relay cannot fix it.
	ClassMessage
	// ClassPolicy: the receiver refused the sender: reputation, block
	// lists, "unsolicited", SPF/DKIM/DMARC/reverse DNS failures (x.7.x that
	// is not greylisting; Microsoft's S3140/S3150, Yahoo's TSS04). A
	// reputable relay is the fix.
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
	// ClassConfig: the smarthost configuration: credentials refused, TLS
	// verification failed, no smarthost configured.
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

// Classify says what kind of failure err is. It reads the *Error's reply
// code, enhanced status code (RFC 3463) and, for reputation and greylisting,
// which servers signal only in words, the reply text.
func Classify(err error) Class {
	if err == nil {
		return ClassNone
	}
	switch {
	case errors.Is(err, ErrSmarthostAuth), errors.Is(err, ErrSmarthostTLS), errors.Is(err, ErrNoSmarthost):
		return ClassConfig
	case errors.Is(err, mx.ErrNullMX), errors.Is(err, mx.ErrNoSuchDomain), errors.Is(err, mx.ErrTemporary):
		return ClassDNS
	case errors.Is(err, smtpclient.ErrSizeExceeded), errors.Is(err, smtpclient.ErrSMTPUTF8Unsupported):
		return ClassMessage
	case errors.Is(err, smtpclient.ErrConnectionLost):
		return ClassTemporary
	case errors.Is(err, ErrTLSRequired), errors.Is(err, smtpclient.ErrTLSFailed), errors.Is(err, smtpclient.ErrTLSUnavailable):
		return ClassConnection
	}
	var e *Error
	if !errors.As(err, &e) {
		return ClassTemporary
	}
	if e.Code == 0 {
		switch e.Command {
		case "DNS":
			return ClassDNS
		case "route":
			return ClassTemporary
		}
		if e.Permanent {
			return ClassPermanent
		}
		return ClassConnection
	}
	return classifyReply(e.Code, e.Enhanced, e.Message, e.Command)
}

// classifyReply classifies one SMTP reply.
func classifyReply(code int, enh EnhancedCode, text, command string) Class {
	lower := strings.ToLower(text)
	if containsAny(lower, greylistWords) {
		return ClassGreylist
	}
	if containsAny(lower, policyWords) || containsAny(text, policyCodes) {
		return ClassPolicy
	}
	if code == 421 && (command == "greeting" || command == "EHLO" || command == "HELO") {
		return ClassConnection // busy or closing before any transaction
	}
	if enh != (EnhancedCode{}) {
		switch enh[1] {
		case 1, 2:
			return ClassMailbox
		case 3:
			// Mail system status: 5.3.4 is "too big for the system"; a
			// 4.3.x is a receiver's passing trouble.
			if code >= 500 {
				return ClassMessage
			}
		case 6:
			return ClassMessage
		case 7:
			return ClassPolicy
		}
	} else {
		switch code {
		case 550, 551, 553:
			return ClassMailbox
		case 552:
			return ClassMessage
		case 554:
			return ClassPolicy // "transaction failed": most often a block
		}
	}
	if code >= 500 {
		return ClassPermanent
	}
	return ClassTemporary
}

// greylistWords mark greylisting, which servers signal in words only
// (postgrey: "Greylisted, see …"; others "greylisting in action").
var greylistWords = []string{"greylist", "graylist", "grey list", "gray list", "grey-list", "gray-list"}

// policyWords mark a refusal of the sender rather than of the recipient,
// whatever the code says. Sources: Gmail's and Microsoft's published
// bounce texts, Spamhaus's and other block lists' reply conventions.
var policyWords = []string{
	"spamhaus", "blocklist", "block list", "blacklist", "black list", "denylist", "dnsbl",
	"unsolicited", "reputation", "spam", "junk",
	"spf", "dkim", "dmarc", "reverse dns", "rdns", "ptr record", "not authenticated",
	"unauthenticated", "banned", "blocked",
}

// policyCodes are provider codes for reputation blocks: Microsoft's
// S3140/S3150 (IP on its block list), Yahoo's TSS04 (complaints, volume),
// and Gmail's enhanced codes that it writes into the text.
var policyCodes = []string{"S3140", "S3150", "TSS04", "TSS09", "5.7.23", "5.7.25", "5.7.26", "5.7.27"}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// FallbackPolicy decides when a recipient that direct delivery could not
// reach is re-sent through the smarthost in the same Send. The zero value
// is the default: fall back on connection failures (no MX host could be
// reached at all: port 25 blocked, every host down) and on policy or
// reputation refusals; never on mailbox, message or DNS failures, which the
// relay cannot fix, nor on greylisting, which passes by retrying from the
// same address. Without a smarthost nothing falls back.
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
	// direct failure and says whether to try the smarthost.
	Decide func(err error) bool
}

// ShouldFallback reports whether a recipient whose direct delivery failed
// with err goes to the smarthost.
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
