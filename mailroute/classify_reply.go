package mailroute

import (
	"strconv"
	"strings"
)

// explainReply classifies one SMTP reply and names what decided.
//
// The order matters: words that servers use only for one meaning come
// before codes, because providers put reputation blocks under 5.1.x or
// 5.0.0 as often as under 5.7.x, and mailbox problems under 5.7.1.
func explainReply(code int, enh EnhancedCode, text, command string) Verdict {
	own := string(ownText(text))
	temp := code >= 400 && code < 500
	if temp {
		if m := findMarker(text, own, greylistMarkers); m != "" {
			return Verdict{Class: ClassGreylist, Marker: m}
		}
	}
	if m := findToken(text, own, providerCodesLower); m != "" {
		return Verdict{Class: ClassPolicy, Marker: m}
	}
	if m := findMarker(text, own, recipientStatusMarkers); m != "" {
		return Verdict{Class: ClassMailbox, Marker: m}
	}
	if enh[1] == 1 && (enh[2] == 7 || enh[2] == 8) {
		// x.1.7, x.1.8: the sender's address or its domain is bad as the
		// receiver sees it. Another path carries the same address.
		if code >= 500 {
			return Verdict{Class: ClassPermanent, Code: enh.String()}
		}
		return Verdict{Class: ClassTemporary, Code: enh.String()}
	}
	if m := findMarker(text, own, messageMarkers); m != "" {
		return Verdict{Class: ClassMessage, Marker: m}
	}
	if m := findMarker(text, own, policyMarkers); m != "" {
		return Verdict{Class: ClassPolicy, Marker: extendList(text, own, m)}
	}
	if code == 421 && (command == "greeting" || command == "EHLO" || command == "HELO") {
		return Verdict{Class: ClassConnection, Code: "421"} // busy or closing before any transaction
	}
	if m := findMarker(text, own, mailboxMarkers); m != "" && enh[1] != 3 && enh[1] != 6 {
		return Verdict{Class: ClassMailbox, Marker: m}
	}
	if m := findMarker(text, own, protocolMarkers); m != "" {
		if code >= 500 {
			return Verdict{Class: ClassPermanent, Marker: m}
		}
		return Verdict{Class: ClassTemporary, Marker: m}
	}
	if enh != (EnhancedCode{}) {
		ec := enh.String()
		switch enh[1] {
		case 1, 2:
			return Verdict{Class: ClassMailbox, Code: ec}
		case 3:
			// Mail system status: 5.3.2 "system not accepting network
			// messages" is how postscreen refuses a listed client; 5.3.4
			// is "too big for the system"; a 4.3.x is a receiver's
			// passing trouble.
			if code >= 500 && enh[2] == 2 {
				return Verdict{Class: ClassPolicy, Code: ec}
			}
			if code >= 500 {
				return Verdict{Class: ClassMessage, Code: ec}
			}
		case 6:
			return Verdict{Class: ClassMessage, Code: ec}
		case 7:
			// A 4.7.x without a marker is a rate limit or greylisting
			// (rspamd's "451 4.7.1 Try again later"): the same address
			// passes later, and the relay would only hide the answer.
			if code >= 500 {
				return Verdict{Class: ClassPolicy, Code: ec}
			}
			return Verdict{Class: ClassTemporary, Code: ec}
		}
		if code >= 500 {
			return Verdict{Class: ClassPermanent, Code: ec}
		}
		return Verdict{Class: ClassTemporary, Code: ec}
	}
	c := strconv.Itoa(code)
	switch code {
	case 550, 551, 553:
		return Verdict{Class: ClassMailbox, Code: c}
	case 552:
		return Verdict{Class: ClassMessage, Code: c}
	case 554:
		return Verdict{Class: ClassPolicy, Code: c} // "transaction failed": most often a block
	}
	if code >= 500 {
		return Verdict{Class: ClassPermanent, Code: c}
	}
	return Verdict{Class: ClassTemporary, Code: c}
}

// greylistMarkers mark greylisting, which servers signal in words only
// (postgrey: "Greylisted, see …"; Exim's greylistd, milter-greylist,
// Mailcow and others "greylisting in action").
var greylistMarkers = []string{
	"greylist", "graylist", "grey list", "gray list", "grey-list", "gray-list",
	"greylisted", "graylisted", "temporarily deferred, please try again",
}

// policyMarkers mark a refusal of the sender — its address, its domain's
// authentication, its reputation — rather than of the recipient, whatever
// the code says. Sources: the corpus in testdata/replies.jsonl (Gmail's,
// Microsoft's, Yahoo's published bounce texts, Postfix's and Exim's
// defaults, the block lists' reply conventions).
var policyMarkers = []string{
	// block lists, as Postfix ("blocked using"), Exim ("is in a black
	// list at", "rejected because ... is in a black list") and the lists
	// themselves put it
	"blocked using", "listed at", "listed in", "listed on", "listed by", "is listed",
	"blocklist", "block list", "blacklist", "black list", "denylist", "deny list", "dnsbl", "rbl",
	"spamhaus", "spamcop", "barracuda reputation", "barracudacentral", "sorbs", "uceprotect",
	"realtime blackhole", "whitelist", "allowlist",
	// reputation and spam
	"reputation", "unsolicited", "spam", "antispam", "junk", "bulk mail", "abuse",
	"poor sending", "sender score", "high volume", "unexpected volume", "user complaints", "complaints",
	// authentication of the sender's domain
	"spf", "dkim", "dmarc", "authentication information", "authentication checks",
	"fails to pass authentication", "not authenticated", "unauthenticated", "sender authentication",
	"sender policy framework", "domainkeys",
	// the client host: reverse DNS, dynamic space, the connecting address
	"reverse dns", "reverse lookup", "rdns", "ptr record", "ptr", "dynamic ip", "dynamic address",
	"residential", "dial-up", "dialup", "client host", "your ip", "sending ip", "sender ip",
	"ip address", "connecting ip", "your address", "client address", "not permitted to send",
	"hostname lookup", "cannot find your hostname", "cannot find your reverse hostname",
	"helo command rejected", "helo", "ehlo rejected",
	// explicit blocks
	"banned", "blocked", "denied by policy", "rejected by policy", "policy violation",
	"sender rejected", "sender address rejected", "sender denied", "not accepting mail from",
	"access denied, banned sender", "rejected for policy reasons", "policy reasons", "policy restrictions",
	"sender verify failed", "administrative prohibition", "anti-spoofing", "not authorized to send",
	"relay not permitted", "relay denied", "relaying denied", "relay access denied", "unable to relay",
	"relaying not allowed", "authentication required",
}

// recipientStatusMarkers are Microsoft's status strings for a recipient
// that cannot receive from this sender (RESOLVER.ADR.RecipNotFound,
// RESOLVER.RST.AuthRequired for restricted groups): whatever else the
// text says, no path changes them.
var recipientStatusMarkers = []string{"resolver.adr.", "resolver.rst."}

// protocolMarkers mark a protocol error between client and server, which
// another path does not change.
var protocolMarkers = []string{
	"synchronization error", "protocol error", "protocol violation", "syntax error",
	"command unrecognized", "bad sequence",
}

// providerCodes are provider codes for reputation blocks, matched as whole
// tokens: Microsoft's S3140/S3150/S844 (IP on its block list) and AS(…)
// codes; Yahoo's TSS04/TSS09 (complaints, volume); Comcast's RP-00x and
// BL000xxx; Apple's CS01; AOL's DYN:T1; Gmail's enhanced codes written
// into the text for authentication (5.7.23 SPF, 5.7.25 PTR, 5.7.26 DMARC/
// unauthenticated, 5.7.27 SPF null MX).
var providerCodes = []string{
	"S3140", "S3150", "S3114", "S844", "TSS04", "TSS09", "TS01", "TS02", "TS03", "TSS11",
	"RP-001", "RP-002", "RP-003", "BL000000", "BL000001", "BL000010", "BL000100",
	"SC-001", "SC-002", "SC-003", "SC-004", "DY-001", "DY-002", "OU-001", "OU-002",
	"CS01", "HL01", "DYN:T1", "RLY:B1", "RTR:BL", "PH01", "IB103", "IB111",
	"5.7.23", "5.7.25", "5.7.26", "5.7.27", "5.7.28",
}

// messageMarkers mark a refusal of the message itself, which no relay
// changes: malware, forbidden attachments, size.
var messageMarkers = []string{
	"virus", "malware", "infected", "prohibited attachment", "attachment type", "banned attachment",
	"message size", "message too large", "message too big", "size limit", "exceeds the maximum size",
	"line too long", "message header", "header size", "too many hops", "mail loop", "loop detected",
	"attachment", "security issue", "banned:", "size exceeded", "too many received", "loops back",
	"exceeded 50 hops", "hop count exceeded",
}

// mailboxMarkers mark a problem of the recipient's mailbox, for replies
// whose codes do not say it.
var mailboxMarkers = []string{
	"user unknown", "unknown user", "no such user", "no such recipient", "no such mailbox",
	"mailbox unavailable", "mailbox not found", "mailbox is full", "mailbox full", "over quota",
	"quota exceeded", "does not exist", "recipient address rejected: user unknown",
	"recipient unknown", "invalid recipient", "unknown recipient", "disabled",
	"recipient address rejected: access denied", "this user doesn't have", "not our customer",
	"inactive", "account has been disabled", "not a valid mailbox", "resolver.adr", "resolver.rst",
	"recipient not found", "user not found", "unrouteable address", "mailbox disabled",
}

// ownText returns text in lower case with what the server echoes or
// names — addresses in angle brackets, bracketed literals, URLs, e-mail
// addresses, host names and IP addresses — blanked out by spaces, so that
// byte offsets still match text.
func ownText(text string) []byte {
	// ASCII-only lower case keeps every byte where it was (strings.ToLower
	// would not, on invalid UTF-8), so offsets into own are offsets into
	// text.
	b := []byte(text)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	blank := func(i, j int) {
		for k := i; k < j && k < len(b); k++ {
			b[k] = ' '
		}
	}
	// <…> spans: echoed addresses.
	for i := 0; i < len(b); i++ {
		if b[i] == '<' {
			if j := indexFrom(b, i, '>'); j > 0 {
				blank(i, j+1)
				i = j
			}
		}
	}
	// […] spans that hold an address or a host ([192.0.2.1],
	// [mx.example.net], [IPv6:…]); [TSS04] and [ABCD] stay: providers put
	// their codes in brackets.
	for i := 0; i < len(b); i++ {
		if b[i] == '[' {
			j := indexFrom(b, i, ']')
			if j < 0 {
				continue
			}
			if inner := b[i+1 : j]; containsAnyByte(inner, ".:@") {
				blank(i, j+1)
			}
			i = j
		}
	}
	// Whitespace-separated tokens that are URLs, addresses, host names or
	// IP addresses (sentence punctuation around them aside).
	for i := 0; i < len(b); {
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		j := i
		for j < len(b) && !isSpace(b[j]) {
			j++
		}
		if i < j {
			s, e := trimPunct(b, i, j)
			if tok := string(b[s:e]); s < e && (strings.Contains(tok, "://") || strings.HasPrefix(tok, "www.")) {
				blank(s, e)
			} else {
				blankEchoedParts(b, text, i, j)
			}
		}
		i = j
	}
	return b
}

// blankEchoedParts blanks the echoed parts of a token glued together with
// punctuation, as in Barracuda's "(user@example.org:blocked)".
func blankEchoedParts(b []byte, text string, i, j int) {
	for k := i; k < j; {
		for k < j && strings.IndexByte("(),;:", b[k]) >= 0 {
			k++
		}
		l := k
		for l < j && strings.IndexByte("(),;:", b[l]) < 0 {
			l++
		}
		if s, e := trimPunct(b, k, l); s < e && echoed(string(b[s:e]), text[s:e]) {
			for x := s; x < e; x++ {
				b[x] = ' '
			}
		}
		k = l
	}
}

func indexFrom(b []byte, i int, c byte) int {
	for j := i + 1; j < len(b); j++ {
		if b[j] == c {
			return j
		}
	}
	return -1
}

func containsAnyByte(b []byte, set string) bool {
	for _, c := range b {
		if strings.IndexByte(set, c) >= 0 {
			return true
		}
	}
	return false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// trimPunct narrows b[i:j] to leave out sentence punctuation and quotes.
func trimPunct(b []byte, i, j int) (int, int) {
	for i < j && strings.IndexByte("\"'(<[{", b[i]) >= 0 {
		i++
	}
	for j > i && strings.IndexByte(".,;:!?\"')>]}", b[j-1]) >= 0 {
		j--
	}
	return i, j
}

// echoed reports whether a token is something a server echoes or points
// to rather than its own words: a URL, an address, a host name, an IP
// address. An enhanced status code (5.7.1) is not.
func echoed(tok, orig string) bool {
	switch {
	case strings.Contains(tok, "://"), strings.HasPrefix(tok, "www."), strings.Contains(tok, "@"):
		return true
	case strings.Count(tok, ":") >= 2:
		return true // IPv6
	case !strings.Contains(tok, "."):
		return false
	}
	if mixedCase(orig) {
		return false // RESOLVER.ADR.RecipNotFound: a status, not a host
	}
	labels := strings.Split(tok, ".")
	digits := true
	for _, l := range labels {
		if l == "" {
			return false // "e.g..", an ellipsis
		}
		for _, c := range l {
			if c < '0' || c > '9' {
				digits = false
			}
		}
	}
	if digits {
		return len(labels) == 4 // an IPv4 address; 5.7.1 is a code
	}
	// A host name: dotted labels ending in a letter label of two or more
	// ("zen.spamhaus.org", "mx.example"), not "e.g" or "i.e".
	last := labels[len(labels)-1]
	if len(last) < 2 {
		return false
	}
	for _, c := range last {
		if (c < 'a' || c > 'z') && c != '-' {
			return false
		}
	}
	return true
}

// findMarker returns the first of markers (they are listed strongest
// first) found in own (the masked, lower-cased text) at a word start, as
// it appears in text, or "".
func findMarker(text, own string, markers []string) string {
	for _, m := range markers {
		if at := wordIndex(own, m); at >= 0 {
			return text[at : at+len(m)]
		}
	}
	return ""
}

// providerCodesLower is providerCodes as ownText writes them.
var providerCodesLower = func() []string {
	out := make([]string, len(providerCodes))
	for i, c := range providerCodes {
		out[i] = strings.ToLower(c)
	}
	return out
}()

// findToken returns the first of codes (lower case) found as a whole
// token, as it appears in text, or "".
func findToken(text, own string, codes []string) string {
	for _, lc := range codes {
		for from := 0; ; {
			i := strings.Index(own[from:], lc)
			if i < 0 {
				break
			}
			i += from
			end := i + len(lc)
			if (i == 0 || !isWordByte(own[i-1]) && own[i-1] != '.') && (end == len(own) || !isWordByte(own[end]) && !(own[end] == '.' && end+1 < len(own) && isWordByte(own[end+1]))) {
				return text[i:end]
			}
			from = i + 1
		}
	}
	return ""
}

// wordIndex finds m in own where it starts a word (so "spam" matches
// "spammer" but not "antispam"), or returns -1.
func wordIndex(s, m string) int {
	for from := 0; from <= len(s); {
		i := strings.Index(s[from:], m)
		if i < 0 {
			return -1
		}
		i += from
		if i == 0 || !isWordByte(s[i-1]) {
			return i
		}
		from = i + 1
	}
	return -1
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// extendList lengthens a block-list marker by the list it names ("blocked
// using" + " zen.spamhaus.org"): the name is what the sender needs to look
// up, and the marker stays a substring of the reply.
func extendList(text, own, m string) string {
	switch strings.ToLower(m) {
	case "blocked using", "listed at", "listed in", "listed on", "listed by":
	default:
		return m
	}
	at := wordIndex(own, strings.ToLower(m))
	if at < 0 {
		return m
	}
	end := at + len(m)
	i := end
	for i < len(text) && text[i] == ' ' {
		i++
	}
	j := i
	for j < len(text) && !isSpace(text[j]) {
		j++
	}
	if i == j {
		return m
	}
	s, e := trimPunct([]byte(text), i, j)
	if s >= e {
		return m
	}
	return text[at:e]
}

// mixedCase reports whether some dot-separated label of s has both upper-
// and lower-case letters, which host names as servers print them do not.
func mixedCase(s string) bool {
	for _, l := range strings.Split(s, ".") {
		up, low := false, false
		for _, c := range l {
			up = up || c >= 'A' && c <= 'Z'
			low = low || c >= 'a' && c <= 'z'
		}
		if up && low {
			return true
		}
	}
	return false
}
