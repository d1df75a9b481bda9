package mailroute

import (
	"errors"
	"strconv"
)

// TLSProtection says which TLS protected a delivery — or the last attempt,
// when it failed. RecipientResult.TLS, the log line ("tls") and Event carry
// it.
type TLSProtection uint8

const (
	// TLSNone: plaintext, or nothing was sent.
	TLSNone TLSProtection = iota
	// TLSUnverified: encrypted, the certificate not checked (opportunistic
	// STARTTLS, RFC 7435), which protects against eavesdroppers but not
	// against an attacker on the path.
	TLSUnverified
	// TLSVerified: the certificate was verified for the MX host name under
	// DirectOptions.TLS = RequireTLS. The name came from DNS that nothing
	// authenticated, so an attacker who can forge the MX answer chooses it.
	TLSVerified
	// TLSMTASTS: the domain's MTA-STS policy (RFC 8461) named the MX host
	// and its certificate was verified for that name.
	TLSMTASTS
	// TLSDANE: the server's certificate matched its TLSA records, found
	// through DNSSEC-authenticated MX and TLSA answers (RFC 7672).
	TLSDANE
	// TLSRelay: the relay, its certificate verified against its
	// configured name.
	TLSRelay
)

var tlsProtectionNames = [...]string{"none", "unverified", "verified", "mta-sts", "dane", "relay"}

// String returns "none", "unverified", "verified", "mta-sts", "dane" or
// "relay".
func (p TLSProtection) String() string {
	if int(p) < len(tlsProtectionNames) {
		return tlsProtectionNames[p]
	}
	return "TLSProtection(" + strconv.Itoa(int(p)) + ")"
}

// authenticated reports whether the server's identity was proven through
// something an attacker on the path cannot forge: DANE, MTA-STS, or the
// relay's configured name. This is what REQUIRETLS (RFC 8689 §4.2.1) asks
// for.
func (p TLSProtection) authenticated() bool {
	return p == TLSDANE || p == TLSMTASTS || p == TLSRelay
}

// Errors of authenticated TLS, for errors.Is.
var (
	// ErrTLSPolicy means the destination publishes a TLS policy — DANE
	// TLSA records or an MTA-STS policy in enforce mode — that no MX host
	// met: a certificate that does not match, STARTTLS missing or
	// stripped, an MX host outside the policy, a TLSA lookup that failed.
	// The recipient is deferred, never sent in plaintext; it goes to the
	// relay only when FallbackPolicy.OnTLSPolicy says so.
	ErrTLSPolicy = errors.New("the destination's DANE or MTA-STS policy could not be met")
	// ErrREQUIRETLS means a message marked with WithREQUIRETLS could not
	// go over TLS authenticated by DANE, MTA-STS or the relay's name, to
	// a server that offers REQUIRETLS (RFC 8689). It is deferred, never
	// downgraded.
	ErrREQUIRETLS = errors.New("REQUIRETLS: no next hop with authenticated TLS that offers REQUIRETLS")
)
