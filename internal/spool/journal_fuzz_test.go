package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

// FuzzParseSegment feeds arbitrary bytes to the journal parser, which reads
// whatever a crash or a disk left in a segment. Invariants: it never
// panics; every record it returns is framed by a checksum that matches,
// and encodes back to exactly the bytes it was read from; a body record's
// body is at recBodyOffset in it, where Body reads a body only the journal
// holds; it stops only with errTorn or errDamaged; and the records of a
// valid prefix are always recovered, whatever follows them.
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
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		recs, end, err := parseSegment(data)
		if err == nil && end < len(data) && !allZero(data[end:]) {
			t.Fatalf("stopped at %d of %d without saying why", end, len(data))
		}
		if err != nil && !errors.Is(err, errTorn) && !errors.Is(err, errDamaged) {
			t.Fatalf("unclassified error %v", err)
		}
		// Every record is one the encoder would write, byte for byte, at
		// the place it was read from.
		off := len(segmentMagic)
		for _, r := range recs {
			enc := appendRecord(nil, r.kind, r.id, r.state, r.body)
			if off+len(enc) > len(data) || !bytes.Equal(data[off:off+len(enc)], enc) {
				t.Fatalf("record %+v at %d is not the bytes it came from", r, off)
			}
			if crc32.Checksum(enc[recHeader:], castagnoli) != binary.BigEndian.Uint32(enc[4:]) {
				t.Fatal("returned a record whose checksum does not match")
			}
			if r.kind == recBody {
				at := off + int(recBodyOffset(r.id, len(r.state)))
				if at+len(r.body) != off+len(enc) || !bytes.Equal(data[at:at+len(r.body)], r.body) {
					t.Fatalf("the body of record %+v is not at offset %d of it", r, at-off)
				}
			}
			off += len(enc)
		}
		if len(recs) > 0 && off != end {
			t.Fatalf("records end at %d, parser says %d", off, end)
		}
		// A valid prefix survives any suffix: the records recovered, then
		// arbitrary bytes.
		if len(recs) == 0 {
			return
		}
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
	})
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
