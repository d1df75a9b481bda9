package dkimsign

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// Options says what Prefix adds.
type Options struct {
	// Keys are the signatures to add, each made by Normalize. None: the
	// message is not signed.
	Keys []Key
	// AddDate and AddMessageID add that field when the header lacks it.
	AddDate, AddMessageID bool
	// MessageIDDomain is the right-hand side of a made Message-ID. "": the
	// From address's domain, else Hostname.
	MessageIDDomain string
	// Hostname is the last resort for a Message-ID's right-hand side.
	Hostname string
	// Now is the time for Date and the signatures' t=. Zero: time.Now().
	Now time.Time
	// Rand is the source of Message-IDs' randomness. nil: crypto/rand.
	Rand io.Reader
}

// Prefix returns the text to put before msg: one DKIM-Signature field per
// key, then any Date and Message-ID it added, each ending in CRLF; "" when
// there is nothing to add. open must return a new reader of the whole
// canonical message each time it is called: it is called twice, once for
// the header and once to sign.
func Prefix(open func() io.Reader, opts Options) (string, error) {
	if len(opts.Keys) == 0 && !opts.AddDate && !opts.AddMessageID {
		return "", nil
	}
	h, err := ScanHeader(open())
	if err != nil {
		return "", fmt.Errorf("reading the header: %w", err)
	}
	added, err := missingFields(&h, &opts)
	if err != nil {
		return "", err
	}
	if len(opts.Keys) == 0 {
		return added, nil
	}
	sigs, err := sign(open, added, &h, &opts)
	if err != nil {
		return "", err
	}
	return sigs + added, nil
}

// missingFields makes the Date and Message-ID the header lacks, counting
// them in h, followed by an empty line when the message has no header
// section of its own.
func missingFields(h *Header, opts *Options) (string, error) {
	var b strings.Builder
	if opts.AddDate && !h.Has("Date") {
		// RFC 5322 §3.3 date-time; RFC1123Z has the numeric zone it wants.
		b.WriteString("Date: " + opts.now().Format(time.RFC1123Z) + "\r\n")
		h.Count["date"]++
	}
	if opts.AddMessageID && !h.Has("Message-ID") {
		id, err := messageID(opts, h.FromDomain)
		if err != nil {
			return "", err
		}
		b.WriteString("Message-ID: " + id + "\r\n")
		h.Count["message-id"]++
	}
	if b.Len() > 0 && h.BodyFirst {
		b.WriteString("\r\n")
		h.BodyFirst = false
	}
	return b.String(), nil
}

func (o *Options) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

// idEncoding spells the random part of a Message-ID: lower case letters and
// digits only, safe in any dot-atom.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// messageID makes "<random@domain>" (RFC 5322 §3.6.4) with 128 random bits,
// so that it is unique without any state shared between programs.
func messageID(opts *Options, fromDomain string) (string, error) {
	domain := opts.MessageIDDomain
	if domain == "" {
		domain = fromDomain
	}
	if domain == "" {
		domain = opts.Hostname
	}
	if domain == "" {
		return "", errors.New("no domain for a Message-ID: set a From address or a host name")
	}
	r := opts.Rand
	if r == nil {
		r = rand.Reader
	}
	var raw [16]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return "", fmt.Errorf("making a Message-ID: %w", err)
	}
	return "<" + idEncoding.EncodeToString(raw[:]) + "@" + domain + ">", nil
}

// sign streams added and the message through one signer per key and
// returns their DKIM-Signature fields, in key order.
func sign(open func() io.Reader, added string, h *Header, opts *Options) (string, error) {
	signers := make([]*dkim.Signer, 0, len(opts.Keys))
	defer func() {
		for _, s := range signers {
			s.Close() // ends the signer's goroutine after a failure; a no-op after success
		}
	}()
	writers := make([]io.Writer, 0, len(opts.Keys))
	for _, k := range opts.Keys {
		s, err := dkim.NewSigner(&dkim.SignOptions{
			Domain:                 k.Domain,
			Selector:               k.Selector,
			Signer:                 k.Signer,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             signedFields(k.Headers, h),
		})
		if err != nil {
			return "", fmt.Errorf("DKIM %s._domainkey.%s: %w", k.Selector, k.Domain, err)
		}
		signers = append(signers, s)
		writers = append(writers, s)
	}
	w := io.MultiWriter(writers...)
	if _, err := io.WriteString(w, added); err != nil {
		return "", fmt.Errorf("DKIM: %w", err)
	}
	if _, err := io.Copy(w, open()); err != nil {
		return "", fmt.Errorf("DKIM: %w", err)
	}
	var b strings.Builder
	for i, s := range signers {
		if err := s.Close(); err != nil {
			k := opts.Keys[i]
			return "", fmt.Errorf("DKIM %s._domainkey.%s: %w", k.Selector, k.Domain, err)
		}
		b.WriteString(s.Signature())
	}
	return b.String(), nil
}

// signedFields is the h= list: each wanted field once more than the header
// has it (over-signing, RFC 6376 §5.4.2 and §8.15), absent fields included.
// A verifier reads the bottom-most instances of a field first and the
// surplus name matches a null field, so a Subject, Reply-To or Content-Type
// prepended on the way — a second one, or one the message lacked — breaks
// the signature instead of replacing what the reader sees. rspamd signs
// its default list the same way.
func signedFields(want []string, h *Header) []string {
	if want == nil {
		want = DefaultHeaders
	}
	out := make([]string, 0, 2*len(want)+2)
	seen := make(map[string]bool, len(want))
	for _, name := range want {
		key := strings.ToLower(name)
		if seen[key] {
			continue
		}
		seen[key] = true
		for range h.Count[key] + 1 {
			out = append(out, name)
		}
	}
	return out
}
