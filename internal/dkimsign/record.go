package dkimsign

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Record returns the TXT record that publishes pub for DKIM, e.g.
// "v=DKIM1; k=ed25519; p=…", to be published at
// selector._domainkey.domain. An RSA key is given as a SubjectPublicKeyInfo
// (what "openssl rsa -pubout" prints and every verifier reads).
func Record(pub crypto.PublicKey) (string, error) {
	typ, err := KeyType(pub)
	if err != nil {
		return "", err
	}
	var der []byte
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if der, err = x509.MarshalPKIXPublicKey(p); err != nil {
			return "", err
		}
	case ed25519.PublicKey:
		der = p // RFC 8463 §4.2: the raw 32 octets
	}
	return "v=DKIM1; k=" + typ + "; p=" + base64.StdEncoding.EncodeToString(der), nil
}

// ZoneTXT quotes a TXT value for a zone file, in strings of at most 255
// octets (RFC 1035 §3.3.14): a 2048-bit RSA key record needs two. DNS
// clients join them back into one record.
func ZoneTXT(value string) string {
	var b strings.Builder
	for len(value) > 0 {
		n := min(len(value), 255)
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteByte('"')
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(value[:n]))
		b.WriteByte('"')
		value = value[n:]
	}
	return b.String()
}

// KeyRecord is a published DKIM key record (RFC 6376 §3.6.1), as far as
// checking it against a signer needs.
type KeyRecord struct {
	Type    string           // "rsa" (the default) or "ed25519"
	Public  crypto.PublicKey // nil when Revoked
	Revoked bool             // p= is empty: the key was withdrawn
	Testing bool             // t=y: receivers treat failures as unsigned
	Hashes  []string         // h=: the hashes allowed; nil means all
	Bits    int              // the RSA key's size; 0 for Ed25519
}

// ErrNotDKIM is returned by ParseRecord for a TXT record that is not a
// DKIM key (a different v=).
var ErrNotDKIM = errors.New("not a DKIM key record (v= is not DKIM1)")

// ParseRecord reads a DKIM key record. Its errors say what is wrong in words
// a person publishing the record understands.
func ParseRecord(txt string) (*KeyRecord, error) {
	tags := make(map[string]string)
	for i, part := range strings.Split(txt, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not a tag=value pair", part)
		}
		name = strings.TrimSpace(name)
		if _, dup := tags[name]; dup {
			return nil, fmt.Errorf("tag %s= appears twice", name)
		}
		if name == "v" && i != 0 {
			return nil, fmt.Errorf("v= must be the first tag")
		}
		tags[name] = strings.TrimSpace(value)
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return nil, ErrNotDKIM
	}
	rec := &KeyRecord{Type: "rsa"}
	if k, ok := tags["k"]; ok {
		rec.Type = strings.ToLower(k)
	}
	if h, ok := tags["h"]; ok {
		for _, a := range strings.Split(h, ":") {
			rec.Hashes = append(rec.Hashes, strings.ToLower(strings.TrimSpace(a)))
		}
	}
	for _, f := range strings.Split(tags["t"], ":") {
		rec.Testing = rec.Testing || strings.TrimSpace(f) == "y"
	}
	p, ok := tags["p"]
	if !ok {
		return nil, fmt.Errorf("no p= tag (the public key)")
	}
	p = strings.Join(strings.Fields(p), "")
	if p == "" {
		rec.Revoked = true
		return rec, nil
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("p= is not valid base64: %v", err)
	}
	switch rec.Type {
	case "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			// RFC 6376 is read both ways (erratum 3017): accept the
			// bare RSAPublicKey too.
			pub, err = x509.ParsePKCS1PublicKey(der)
			if err != nil {
				return nil, fmt.Errorf("p= is not an RSA public key: %v", err)
			}
		}
		rsaPub, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("k=rsa but p= holds a %T key", pub)
		}
		rec.Public, rec.Bits = rsaPub, rsaPub.N.BitLen()
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("p= holds %d octets, an Ed25519 key is %d", len(der), ed25519.PublicKeySize)
		}
		rec.Public = ed25519.PublicKey(der)
	default:
		return nil, fmt.Errorf("unknown key type k=%s", rec.Type)
	}
	return rec, nil
}

// SameKey reports whether two public keys are the same key.
func SameKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
