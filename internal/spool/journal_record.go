package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// A journal segment is a header followed by records:
//
//	segment: "MRJRNL" 0x00 0x01, then records until the end of the file
//	record:  length uint32 | crc uint32 | payload (length bytes)
//	payload: kind uint8 | idLen uint8 | id | stateLen uint32 | state | body
//
// Integers are big-endian; crc is the CRC-32C of the payload. The state is
// a state file's exact bytes (see encodeState); the body, present in
// recBody records only, runs to the end of the payload.
var segmentMagic = []byte("MRJRNL\x00\x01")

// Record kinds.
const (
	recState = 1 // a message's state; its body is in its file (or an earlier recBody)
	recBody  = 2 // a state and the whole body: an Enqueue of a small body
	recTomb  = 3 // a tombstone: the message is gone (delivered, quarantined, or a failed Enqueue)
)

const (
	recHeader = 8             // length and crc
	recMinLen = 1 + 1 + 1 + 4 // kind, idLen, a 1-byte ID, stateLen
	// recMaxLen bounds a payload: a state of at most maxStateSize, a body
	// of at most journalBodyMax and an ID. A longer length field is damage,
	// not a record, and is never allocated for.
	recMaxLen = 2 + maxIDLen + 4 + maxStateSize + journalBodyMax
)

// record is one decoded journal record. state and body alias the segment's
// bytes.
type record struct {
	off   int // where its frame starts in the segment
	kind  uint8
	id    string
	state []byte
	body  []byte // recBody only
}

// appendRecord appends the framed record to dst.
func appendRecord(dst []byte, kind uint8, id string, state, body []byte) []byte {
	n := 2 + len(id) + 4 + len(state) + len(body)
	start := len(dst)
	dst = slices.Grow(dst, recHeader+n) // one allocation, not one per append
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = binary.BigEndian.AppendUint32(dst, 0) // crc, below
	dst = append(dst, kind, byte(len(id)))
	dst = append(dst, id...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(state)))
	dst = append(dst, state...)
	dst = append(dst, body...)
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(dst[start+recHeader:], castagnoli))
	return dst
}

// recBodyOffset is where the body starts in a framed record of message
// id with a state of stateLen bytes: a message whose body is only in the
// journal is read back from there.
func recBodyOffset(id string, stateLen int) int64 {
	return int64(recHeader + 2 + len(id) + 4 + stateLen)
}

// errTorn and errDamaged say what parsing met before the end of a
// segment. Torn is what a crash during an append leaves (a last record cut
// short, or zeros from a write the disk never completed): that append was
// never acknowledged. Damaged is anything else: bad bytes that are not
// explained by a crash, skipped to the next valid record (see
// journal_resync.go).
var (
	errTorn    = errors.New("torn tail")
	errDamaged = errors.New("damaged record")
)

// parseSegment decodes the records of a segment. Where a record is bad and
// a valid one follows somewhere after it, the bytes between are skipped as
// damage and parsing goes on from the valid one (see journal_resync.go). It
// returns the records found, each with its offset, where the last of them
// ends (when there is none: the header's end, or 0 when the header is
// bad), and nil when nothing was
// skipped and the segment ends at the end of data or where only zeros
// (preallocated space) follow. Otherwise the error wraps errDamaged, as a
// *damageError listing every range skipped, and/or errTorn when the
// segment ends in a bad record after which nothing valid follows and which
// a crash during its append explains. A segment whose header is bad is
// scanned for records from its start (errTorn, no records, when data is a
// prefix of the header or all zeros: a crash right after the segment was
// created).
func parseSegment(data []byte) ([]record, int, error) {
	if len(data) < len(segmentMagic) || !bytes.Equal(data[:len(segmentMagic)], segmentMagic) {
		if bytes.HasPrefix(segmentMagic, data) || allZero(data) {
			return nil, 0, fmt.Errorf("%w: incomplete segment header", errTorn)
		}
	}
	var (
		recs []record
		dmg  damageError
		tail error
	)
	nz := nonZeroEnd(data) // from here on only zeros: the end
	off, end := len(segmentMagic), len(segmentMagic)
	if !bytes.HasPrefix(data, segmentMagic) {
		// Not a segment's header: damage, or not a segment at all. Its
		// records, if any, are found by their checksums like any others
		// (none at offset 0, where a segment has its header).
		off, end = 0, 0
		q := nextFrame(data, 1, nz)
		if q < 0 {
			q = nz
		}
		dmg.add(data, 0, q, errors.New("not a journal segment header"), q == nz)
		off = q
	}
	for off < nz {
		r, n, err := parseRecord(data[off:])
		if err == nil {
			r.off = off
			recs = append(recs, r)
			off += n
			end = off
			continue
		}
		q := nextFrame(data, off+1, nz)
		if q < 0 {
			// Nothing valid follows: the tail is torn, or damaged to its end.
			if cerr := classify(data, off, n, err); errors.Is(cerr, errTorn) {
				tail = cerr
			} else {
				dmg.add(data, off, nz, err, true)
			}
			break
		}
		dmg.add(data, off, q, err, false)
		off = q
	}
	switch {
	case len(dmg.skips) > 0 && tail != nil:
		return recs, end, errors.Join(&dmg, tail)
	case len(dmg.skips) > 0:
		return recs, end, &dmg
	}
	return recs, end, tail
}

// classify decides whether a bad record at off, claiming n bytes (0 when
// its length is unusable), after which no valid record follows, is a torn
// tail or damage.
func classify(data []byte, off, n int, err error) error {
	rest := data[off:]
	switch {
	case n == 0 && len(rest) < recHeader:
		return fmt.Errorf("%w at offset %d: %d bytes of a record header", errTorn, off, len(rest))
	case n > len(rest):
		return fmt.Errorf("%w at offset %d: record of %d bytes, %d written", errTorn, off, n, len(rest))
	case n == len(rest) || n > 0 && allZero(rest[n:]):
		return fmt.Errorf("%w at offset %d: the last record is bad: %v", errTorn, off, err)
	}
	return fmt.Errorf("%w at offset %d: %v, and %d bytes follow", errDamaged, off, err, len(rest))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// parseRecord decodes the record at the start of b. On an error n is the
// record's claimed size when its length field is plausible, else 0.
func parseRecord(b []byte) (r record, n int, err error) {
	if len(b) < recHeader {
		return r, 0, errors.New("short header")
	}
	length := binary.BigEndian.Uint32(b)
	if length < recMinLen || length > recMaxLen {
		return r, 0, fmt.Errorf("length %d out of range", length)
	}
	n = recHeader + int(length)
	if n > len(b) {
		return r, n, errors.New("incomplete")
	}
	p := b[recHeader:n]
	if got, want := crc32.Checksum(p, castagnoli), binary.BigEndian.Uint32(b[4:]); got != want {
		return r, n, fmt.Errorf("checksum %08x, record says %08x", got, want)
	}
	r.kind = p[0]
	idLen := int(p[1])
	if len(p) < 2+idLen+4 {
		return r, n, errors.New("ID runs past the record")
	}
	r.id = string(p[2 : 2+idLen])
	if err := checkID(r.id); err != nil {
		return r, n, err
	}
	stateLen := binary.BigEndian.Uint32(p[2+idLen:])
	rest := p[2+idLen+4:]
	if uint64(stateLen) > uint64(len(rest)) {
		return r, n, errors.New("state runs past the record")
	}
	r.state, r.body = rest[:stateLen], rest[stateLen:]
	switch {
	case r.kind == recTomb && (len(r.state) != 0 || len(r.body) != 0):
		return r, n, errors.New("tombstone with a payload")
	case r.kind == recState && (len(r.state) == 0 || len(r.body) != 0):
		return r, n, errors.New("state record without a state, or with a body")
	case r.kind == recBody && len(r.state) == 0:
		return r, n, errors.New("body record without a state")
	case r.kind != recTomb && r.kind != recState && r.kind != recBody:
		return r, n, fmt.Errorf("unknown kind %d", r.kind)
	}
	if r.kind != recBody {
		r.body = nil
	}
	return r, n, nil
}
