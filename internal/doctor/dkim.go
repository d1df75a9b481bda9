package doctor

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mailroute/go-mailroute/internal/dkimsign"
)

// checkDKIM: each selector publishes one key record that parses and holds
// the key the Mailer signs with.
func (r *run) checkDKIM() {
	r.dkimGood = make([]bool, len(r.in.Keys))
	if len(r.in.Keys) == 0 {
		r.add(Finding{Check: "DKIM", Status: Warning, Query: "Config.DKIM",
			Found: "messages are not signed: DMARC then rests on SPF alone, which mail through most relays does not align",
			Fix:   "Set Config.DKIM to a signature for " + r.in.Domain + " and publish its key (DKIMSignature.Record)."})
		return
	}
	for i, k := range r.in.Keys {
		r.dkimGood[i] = r.checkKey(k)
	}
}

func (r *run) checkKey(k Key) bool {
	name := k.Selector + "._domainkey." + k.Domain
	f := Finding{Check: "DKIM", Query: "TXT " + name}
	want := ""
	if k.Public != nil {
		if rec, err := dkimsign.Record(k.Public); err == nil {
			want = name + ". TXT " + dkimsign.ZoneTXT(rec)
		}
	}
	// publish says which record to publish, prefixed by what to do.
	publish := func(do string) string {
		if want == "" {
			return do + " the public key of selector " + k.Selector + " at " + name + "."
		}
		return do + " " + want
	}
	defer func() { r.add(f) }()

	txts, err := r.in.Resolver.LookupTXT(r.ctx, name)
	if err != nil && !notFound(err) {
		f.Status, f.Found, f.Fix = Warning, lookupFailed(err), retryFix
		return false
	}
	var recs []string
	for _, t := range txts {
		if !strings.HasPrefix(strings.TrimSpace(t), "v=") || strings.HasPrefix(strings.TrimSpace(t), "v=DKIM1") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		f.Status = Problem
		f.Found = "no key record at " + name + ": receivers cannot verify the signatures, which count as failed"
		f.Fix = publish("Publish")
		return false
	case 1:
	default:
		f.Status = Problem
		f.Found = fmt.Sprintf("%d TXT records at %s; verifiers cannot tell which is the key (RFC 6376 §3.6.2.2) and fail", len(recs), name)
		f.Fix = publish("Keep exactly one record:")
		return false
	}
	rec, err := dkimsign.ParseRecord(recs[0])
	if err != nil {
		f.Status = Problem
		f.Found = "the key record does not parse: " + err.Error()
		f.Fix = publish("Replace it with")
		return false
	}
	if rec.Revoked {
		f.Status = Problem
		f.Found = "the key is revoked (p= is empty): signatures with this selector fail"
		f.Fix = publish("Sign with another selector, or publish the key again:")
		return false
	}
	if rec.Hashes != nil && !slices.Contains(rec.Hashes, "sha256") {
		f.Status = Problem
		f.Found = "the record allows only " + strings.Join(rec.Hashes, ":") + " (h=), but signatures use sha256"
		f.Fix = "Remove the h= tag, or make it h=sha256."
		return false
	}
	desc := "an Ed25519 key"
	if rec.Bits > 0 {
		desc = fmt.Sprintf("a %d-bit RSA key", rec.Bits)
	}
	if k.Public == nil {
		f.Found = "publishes " + desc + " (no signer given to compare it with)"
	} else if !dkimsign.SameKey(rec.Public, k.Public) {
		f.Status = Problem
		f.Found = "publishes " + desc + " that is not the key mailroute signs with: every signature fails"
		f.Fix = publish("Replace it with")
		return false
	} else {
		f.Found = "publishes the key mailroute signs with (" + strings.TrimPrefix(strings.TrimPrefix(desc, "an "), "a ") + ")"
	}
	switch {
	case rec.Testing:
		f.Status = Warning
		f.Found += "; t=y (testing): receivers treat failures as if unsigned"
		f.Fix = "Remove t=y from the record once signatures verify."
	case rec.Bits > 0 && rec.Bits < 2048:
		f.Status = Warning
		f.Found += "; under 2048 bits, which receivers increasingly distrust"
		f.Fix = "Make a 2048-bit key under a new selector, publish it, then switch Config.DKIM to it."
	}
	return true
}
