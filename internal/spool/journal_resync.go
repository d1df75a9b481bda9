package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
)

// Resynchronisation: a bad record in the middle of a segment costs only
// its own bytes. parseSegment skips from the bad record to the next offset
// where a valid frame starts and goes on from there, as LevelDB's log
// reader skips to the next block; a segment has no blocks, so the next
// frame is looked for at every offset.
//
// A valid frame is hard to meet by chance. Its length must lie between
// recMinLen and recMaxLen and fit in the segment, its kind must be known,
// its ID must pass checkID, its state length must agree with the kind and
// the length, a state must open as JSON does, and only then is the
// CRC-32C of the payload computed and compared: in random bytes about one
// offset in 2^32 passes the checksum alone. Nor do a record's own bytes
// offer such offsets: a length under 16 MiB, as every real one is, starts
// with a zero octet, and a payload has zero octets only in its state
// length (the state is JSON, the ID is [A-Za-z0-9_-], the body canonical
// mail, without NUL), where a frame would need its payload's checksum to
// be the state's first four octets. So a frame found inside a damaged
// range is a record that was written there, with the same odds as any
// CRC-32C check.

// span is a range of a segment skipped as damaged.
type span struct {
	off, n int
	// id is the message ID the damaged bytes seem to name, when a record
	// header that passes checkID starts the range: unverified, for the
	// operator (it may be the message whose change was lost).
	id     string
	reason error // why the first record of the range was refused
	// last: no valid record follows the range, which runs to the end of
	// the segment's data.
	last bool
}

// damageError lists the ranges of a segment skipped as damaged. It wraps
// errDamaged.
type damageError struct {
	skips []span
}

func (e *damageError) add(data []byte, off, end int, reason error, last bool) {
	e.skips = append(e.skips, span{off: off, n: end - off, id: claimedID(data[off:end]), reason: reason, last: last})
}

func (e *damageError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %d range(s) skipped:", errDamaged, len(e.skips))
	for _, s := range e.skips {
		fmt.Fprintf(&b, " [%d, +%d)", s.off, s.n)
		if s.id != "" {
			fmt.Fprintf(&b, " id %s?", s.id)
		}
		fmt.Fprintf(&b, " (%v);", s.reason)
	}
	return strings.TrimSuffix(b.String(), ";")
}

func (e *damageError) Unwrap() error { return errDamaged }

// nonZeroEnd returns the offset after the last octet of data that is not
// zero: from there on a segment holds only preallocated space.
func nonZeroEnd(data []byte) int {
	n := len(data)
	for n > 0 && data[n-1] == 0 {
		n--
	}
	return n
}

// nextFrame returns the first offset in [from, limit) where a valid record
// starts (see parseRecord), or -1. Each offset is first checked for the
// plausible structure of a frame, which refuses nearly every offset
// without computing a checksum, so that a long damaged range costs a few
// instructions per octet.
func nextFrame(data []byte, from, limit int) int {
	for q := from; q < limit; q++ {
		if !plausibleFrame(data[q:]) {
			continue
		}
		if _, _, err := parseRecord(data[q:]); err == nil {
			return q
		}
	}
	return -1
}

// plausibleFrame reports whether b starts with a frame whose length,
// kind, ID and state length are consistent, leaving the checksum
// unchecked.
func plausibleFrame(b []byte) bool {
	if len(b) < recHeader+recMinLen {
		return false
	}
	length := binary.BigEndian.Uint32(b)
	if length < recMinLen || length > recMaxLen || recHeader+int(length) > len(b) {
		return false
	}
	p := b[recHeader : recHeader+int(length)]
	kind, idLen := p[0], int(p[1])
	if kind != recState && kind != recBody && kind != recTomb || idLen == 0 || 2+idLen+4 > len(p) {
		return false
	}
	if checkID(string(p[2:2+idLen])) != nil {
		return false
	}
	stateLen := uint64(binary.BigEndian.Uint32(p[2+idLen:]))
	rest := uint64(len(p) - 2 - idLen - 4)
	switch kind {
	case recTomb:
		return stateLen == 0 && rest == 0
	case recState:
		return stateLen != 0 && stateLen == rest && p[2+idLen+4] == '{'
	default:
		return stateLen != 0 && stateLen <= rest && p[2+idLen+4] == '{'
	}
}

// claimedID returns the message ID named by the record header at the
// start of b, read without trusting its length or checksum, or "".
func claimedID(b []byte) string {
	if len(b) < recHeader+2 {
		return ""
	}
	p := b[recHeader:]
	kind, idLen := p[0], int(p[1])
	if kind != recState && kind != recBody && kind != recTomb || 2+idLen > len(p) {
		return ""
	}
	id := string(p[2 : 2+idLen])
	if checkID(id) != nil {
		return ""
	}
	return id
}

// salvage reads the record that starts a skipped range b when what it
// holds vouches for itself, though its frame does not (a damaged length,
// checksum or kind): a state that decodes, its own CRC-32C holding, for
// the ID the header names, and, when the octets after the state are the
// body the state describes (its size and CRC-32C), that body. Nothing is
// taken on the frame's word alone, so a tombstone, which carries nothing
// to check, is never salvaged. The record must end inside b.
func salvage(b []byte) (record, bool) {
	var r record
	if len(b) < recHeader+2 {
		return r, false
	}
	p := b[recHeader:]
	kind, idLen := p[0], int(p[1])
	if kind != recState && kind != recBody || 2+idLen+4 > len(p) {
		return r, false
	}
	id := string(p[2 : 2+idLen])
	if checkID(id) != nil {
		return r, false
	}
	stateLen := uint64(binary.BigEndian.Uint32(p[2+idLen:]))
	rest := p[2+idLen+4:]
	if stateLen == 0 || stateLen > uint64(len(rest)) || stateLen > maxStateSize {
		return r, false
	}
	state := rest[:stateLen]
	m, info, err := decodeState(state)
	if err != nil || m.ID != id {
		return r, false
	}
	r = record{kind: recState, id: id, state: state}
	if body := rest[stateLen:]; info.size <= int64(len(body)) && info.size <= journalBodyMax &&
		crc32.Checksum(body[:info.size], castagnoli) == info.crc {
		r.kind, r.body = recBody, body[:info.size]
	}
	return r, true
}
