package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"
	"testing"
)

// FuzzParseSegment feeds arbitrary bytes to the journal parser, which reads
// whatever a crash or a disk left in a segment, and then damages one record
// of a valid segment with them. Invariants on any input: it never panics
// or loops; every record it returns is framed by a checksum that matches,
// and encodes back to exactly the bytes at its offset; a body record's
// body is at recBodyOffset in it, where Body reads a body only the journal
// holds; the records, the ranges it reports as skipped and a torn tail
// cover every octet before the trailing zeros, in order, none twice; it
// reports only errTorn and errDamaged, and nothing when it read every
// octet as records; and the records of a valid prefix are always
// recovered, whatever follows them. On a valid segment with bytes of one
// record overwritten (resynchronisation): every other record is
// recovered, at its offset and byte for byte, unless a frame found inside
// the overwritten record runs over it (which needs a forged checksum); any
// record returned that is not one of the originals starts inside the
// overwritten record.
func FuzzParseSegment(f *testing.F) {
	m := testMessage("seed", t0, "a@example.com")
	state, err := encodeState(m, bodyInfo{size: 5, crc: crc32.Checksum([]byte("body\n"), castagnoli)})
	if err != nil {
		f.Fatal(err)
	}
	seg := concat(segmentMagic,
		appendRecord(nil, recBody, "seed", state, []byte("body\n")),
		appendRecord(nil, recState, "seed", state, nil),
		appendRecord(nil, recTomb, "seed", nil, nil))
	f.Add(seg, 0)
	f.Add(seg[:len(seg)-3], 1)
	f.Add(append(bytes.Clone(seg), make([]byte, 100)...), 2)
	f.Add(segmentMagic, 3)
	f.Add([]byte{}, 4)
	// Overwrites of one record of the valid segment (see damageOne:
	// split = offset*len(resyncRecords) + record).
	n := len(resyncRecords)
	f.Add([]byte{0xff}, 0*n+1)                         // record 1's length: huge
	f.Add([]byte{0, 0, 0, 9}, 0*n+2)                   // record 2's length: small
	f.Add([]byte{0, 0, 0, 0}, 0*n+3)                   // a tombstone's length: zero
	f.Add([]byte{0x55}, 5*n+4)                         // record 4's checksum
	f.Add(bytes.Repeat([]byte{0}, 300), 40*n+1)        // zeros inside record 1
	f.Add(bytes.Repeat([]byte{0xa5}, 77), 20*n+0)      // garbage inside record 0
	f.Add([]byte{}, 100*n+n-1)                         // a bit of the last record
	f.Add([]byte{0, 0, 0x0f, 0xff, 1, 2, 3, 4}, 0*n+0) // record 0's whole frame header
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		recs, end := checkParse(t, data)
		// A valid prefix survives any suffix: the records recovered, then
		// arbitrary bytes.
		if len(recs) > 0 {
			prefix := data[:end]
			suffix := data[:min(max(split, 0), len(data))]
			again, end2, _ := parseSegment(append(bytes.Clone(prefix), suffix...))
			if len(again) < len(recs) || end2 < end {
				t.Fatalf("a valid prefix of %d records lost records after junk was appended: %d", len(recs), len(again))
			}
			for i := range recs {
				if again[i].kind != recs[i].kind || again[i].id != recs[i].id ||
					!bytes.Equal(again[i].state, recs[i].state) || !bytes.Equal(again[i].body, recs[i].body) {
					t.Fatalf("record %d changed when junk followed", i)
				}
			}
		}

		// Resynchronisation: damage one record of a valid segment.
		valid, spans := resyncSegment(t)
		damaged, k := damageOne(valid, spans, data, split)
		got, _ := checkParse(t, damaged)
		mut := spans[k]
		var swallowed [][2]int // frames not among the originals that run past the damaged record
		found := map[int]bool{}
		for _, r := range got {
			n := len(appendRecord(nil, r.kind, r.id, r.state, r.body))
			if j := slices.IndexFunc(spans, func(sp [2]int) bool { return sp[0] == r.off }); j >= 0 && n == spans[j][1]-spans[j][0] &&
				bytes.Equal(damaged[r.off:r.off+n], valid[r.off:r.off+n]) {
				found[j] = true
				continue
			}
			if r.off < mut[0] || r.off >= mut[1] {
				t.Fatalf("record %s at %d is not an original one and starts outside the damaged record [%d, %d)", r.id, r.off, mut[0], mut[1])
			}
			if r.off+n > mut[1] {
				swallowed = append(swallowed, [2]int{r.off, r.off + n})
			}
		}
		// An overwrite of no more than the length and the checksum of a
		// record that carries a state, with a valid record after it,
		// costs nothing: the record is parsed or salvaged, exactly.
		if len(data) > 0 && split >= 0 && k < len(spans)-1 && resyncRecords[k].kind != recTomb &&
			damagedOnly(valid, damaged, mut[0], mut[0]+recHeader) {
			var dmg *damageError
			_, _, err := parseSegment(damaged)
			errors.As(err, &dmg)
			var skips []span
			if dmg != nil {
				skips = dmg.skips
			}
			all := append(slices.Clone(got), salvageRecords(damaged, skips)...)
			want := resyncRecords[k].encode(t)
			if !slices.ContainsFunc(all, func(r record) bool {
				return r.off == mut[0] && bytes.Equal(appendRecord(nil, r.kind, r.id, r.state, r.body)[recHeader:], want[recHeader:])
			}) {
				t.Fatalf("record %d, damaged only in its length and checksum, was neither parsed nor salvaged", k)
			}
		}
		for j, sp := range spans {
			if j == k || found[j] {
				continue
			}
			if slices.ContainsFunc(swallowed, func(w [2]int) bool { return w[0] < sp[1] && sp[0] < w[1] }) {
				continue
			}
			t.Fatalf("record %d [%d, %d), untouched by damage to record %d [%d, %d), was not recovered", j, sp[0], sp[1], k, mut[0], mut[1])
		}
	})
}

// checkParse parses data and checks the invariants that hold for any
// input (see FuzzParseSegment); it returns the records and their end.
func checkParse(t *testing.T, data []byte) ([]record, int) {
	t.Helper()
	recs, end, err := parseSegment(data)
	if err != nil && !errors.Is(err, errTorn) && !errors.Is(err, errDamaged) {
		t.Fatalf("unclassified error %v", err)
	}
	var dmg *damageError
	errors.As(err, &dmg)
	if errors.Is(err, errDamaged) && (dmg == nil || len(dmg.skips) == 0) {
		t.Fatalf("damage without a skipped range: %v", err)
	}
	// Every record is one the encoder would write, byte for byte, at the
	// place it was read from.
	for _, r := range recs {
		enc := appendRecord(nil, r.kind, r.id, r.state, r.body)
		if r.off < 0 || r.off+len(enc) > len(data) || !bytes.Equal(data[r.off:r.off+len(enc)], enc) {
			t.Fatalf("record %s at %d is not the bytes it came from", r.id, r.off)
		}
		if crc32.Checksum(enc[recHeader:], castagnoli) != binary.BigEndian.Uint32(enc[4:]) {
			t.Fatal("returned a record whose checksum does not match")
		}
		if r.kind == recBody {
			at := r.off + int(recBodyOffset(r.id, len(r.state)))
			if at+len(r.body) != r.off+len(enc) || !bytes.Equal(data[at:at+len(r.body)], r.body) {
				t.Fatalf("the body of record %s is not at offset %d of it", r.id, at-r.off)
			}
		}
	}
	// Whatever salvage takes from a skipped range vouches for itself: a
	// state that decodes for the record's ID, and a body that is the one
	// it describes.
	if dmg != nil {
		for _, r := range salvageRecords(data, dmg.skips) {
			m, info, err := decodeState(r.state)
			if err != nil || m.ID != r.id {
				t.Fatalf("salvaged a state that does not decode for %s: %v", r.id, err)
			}
			if r.kind == recBody && (int64(len(r.body)) != info.size || crc32.Checksum(r.body, castagnoli) != info.crc) {
				t.Fatalf("salvaged a body of %s that is not the one its state describes", r.id)
			}
		}
	}
	// Records and skipped ranges follow each other without a gap or an
	// overlap, from the header (or the start, when the header is bad) to
	// the torn tail or the trailing zeros.
	type piece struct{ off, end int }
	var pieces []piece
	for _, r := range recs {
		pieces = append(pieces, piece{r.off, r.off + len(appendRecord(nil, r.kind, r.id, r.state, r.body))})
	}
	if dmg != nil {
		for _, sk := range dmg.skips {
			if sk.n <= 0 {
				t.Fatalf("empty skipped range at %d", sk.off)
			}
			pieces = append(pieces, piece{sk.off, sk.off + sk.n})
		}
	}
	slices.SortFunc(pieces, func(a, b piece) int { return a.off - b.off })
	pos := len(segmentMagic)
	if !bytes.HasPrefix(data, segmentMagic) {
		pos = 0
	}
	for _, p := range pieces {
		if p.off != pos {
			t.Fatalf("records and skipped ranges leave a gap or overlap at %d (next at %d): %v", pos, p.off, err)
		}
		pos = p.end
	}
	if len(recs) > 0 && recs[len(recs)-1].off+len(appendRecord(nil, recs[len(recs)-1].kind, recs[len(recs)-1].id, recs[len(recs)-1].state, recs[len(recs)-1].body)) != end {
		t.Fatalf("the last record does not end at %d, where the parser says", end)
	}
	rest := nonZeroEnd(data)
	switch {
	case errors.Is(err, errTorn):
		// (A header cut short, or all zeros, is torn before any record.)
		if pos >= rest && bytes.HasPrefix(data, segmentMagic) {
			t.Fatalf("a torn tail at %d, after which only zeros follow", pos)
		}
	case pos < rest:
		t.Fatalf("stopped at %d of %d without saying why", pos, rest)
	}
	if err == nil && end < len(data) && !allZero(data[end:]) {
		t.Fatalf("stopped at %d of %d without saying why", end, len(data))
	}
	return recs, end
}

// damagedOnly reports whether a and b differ only inside [from, to).
func damagedOnly(a, b []byte, from, to int) bool {
	n := min(len(a), len(b))
	return bytes.Equal(a[:from], b[:from]) && bytes.Equal(a[to:n], b[to:n])
}

// resyncRecords are the records of the segment FuzzParseSegment damages:
// every kind, several messages, bodies of several sizes.
var resyncRecords = []jrec{
	{kind: recBody, m: testMessage("m1", t0, "a@example.com"), body: testBody(300, 1)},
	{kind: recBody, m: testMessage("m2", t0, "b@example.com"), body: testBody(2048, 2)},
	{kind: recState, m: testMessage("m1", t0, "c@example.com"), body: testBody(300, 1)},
	{kind: recTomb, id: "m2"},
	{kind: recBody, m: testMessage("m3", t0, "d@example.com"), body: testBody(40, 3)},
	{kind: recTomb, id: "x"},
	{kind: recState, m: testMessage("m3", t0, "e@example.com"), body: testBody(40, 3)},
}

// resyncSegment encodes resyncRecords, and returns where each one is.
func resyncSegment(t *testing.T) ([]byte, [][2]int) {
	seg := slices.Clone(segmentMagic)
	var spans [][2]int
	for _, r := range resyncRecords {
		start := len(seg)
		seg = append(seg, r.encode(t)...)
		spans = append(spans, [2]int{start, len(seg)})
	}
	return seg, spans
}

// damageOne overwrites octets of one record of seg with patch (a bit flip
// when patch is empty), clipped to that record: split chooses the record
// (split mod the number of records), the offset in it, and whether
// preallocated zeros follow the segment. It returns the damaged copy and
// the record's index.
func damageOne(seg []byte, spans [][2]int, patch []byte, split int) ([]byte, int) {
	u := uint64(split)
	k := int(u % uint64(len(spans)))
	u /= uint64(len(spans))
	sp := spans[k]
	at := sp[0] + int(u%uint64(sp[1]-sp[0]))
	out := slices.Clone(seg)
	if u/uint64(sp[1]-sp[0])%2 == 1 {
		out = append(out, make([]byte, 4096)...)
	}
	if len(patch) == 0 {
		out[at] ^= 1
	} else {
		copy(out[at:sp[1]], patch)
	}
	return out, k
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
