package spool

import (
	"maps"
	"slices"
)

// What replay does with damage in the middle of the journal.
//
// parseSegment skips the damaged bytes and returns every valid record
// around them (journal_resync.go), so one bad sector costs the records it
// holds, not the rest of a 64 MiB generation. The records in the skipped
// range are unknown, and each kind of record lost there has its own
// consequence:
//
//   - an Enqueue: the message is lost, unless a later record of it
//     survives (its state then comes back, and a body that was only in
//     the lost record is missing, so the scan quarantines the message,
//     state and all, for an operator);
//   - an Update: the message comes back in an earlier state, and the
//     recipients that Update recorded as delivered or failed are tried
//     again;
//   - a tombstone: a message delivered (or quarantined, or whose Enqueue
//     reported an error) comes back and is sent again.
//
// The replay cannot tell these apart, so it does not guess: every record
// that survives is applied as usual, the last record of a message
// winning, and a message whose last surviving record comes before the
// damage stays in the queue as that record left it. A lost tombstone or
// Update then means a message sent twice; dropping such messages instead
// would lose every live message written before the damage, to avoid
// duplicates of those whose change happened to be in it. RFC 5321 §6.1
// makes the choice: a server that has accepted a message "MUST NOT lose
// the message for frivolous reasons", while duplicates are a known and
// tolerated failure of SMTP (the same section, and RFC 1047, on the
// duplicates a timeout after the final dot causes). Postfix makes the same
// choice with a queue file per message: a damaged file is set aside
// (corrupt/) and costs only its message, and a recipient whose delivery
// was not recorded before a crash is delivered again. RocksDB names this
// recovery mode kSkipAnyCorruptedRecords and keeps it for last-ditch
// salvage or unrelated records, since a skipped write can make later ones
// inconsistent; a record here is the whole state of one message, so a
// skipped record never makes a later record wrong.
//
// From the damaged bytes only what vouches for itself is taken (salvage,
// journal_resync.go): a record at the start of a skipped range whose state
// decodes, its own CRC-32C holding, for the ID its header names, with its
// body when the octets after the state are the body that state describes
// (size and CRC-32C). So damage confined to a frame's length, checksum or
// kind costs nothing, and a record whose body is damaged still gives its
// state, which the scan then quarantines, visible, instead of losing it
// silently. A tombstone carries nothing to check and is never taken from
// damaged bytes: a wrong one would lose a message. Nor is anything taken
// from a range no valid record follows, which may be an append a crash cut
// short.
//
// A crash can leave the same picture: a round whose later sectors reached
// the disk and whose earlier ones did not. Its records after the hole were
// never acknowledged (like a whole round written before the crash kept its
// fdatasync from returning, they are replayed), and the hole is reported
// as damage: the replay cannot tell a hole a crash left from a zeroed
// sector, and says so rather than stay quiet about a loss.
//
// The operator gets what is needed to check by hand: the segment copied
// to corrupt/, one line at Warn per skipped range (offset, length, and the
// ID its first header seems to name), one per salvaged record, and one per
// message the damaged journal still holds, saying whether its last record
// starts before damaged bytes that were not salvaged (a later change may
// have been lost there: it may be sent twice) or after all of them (its
// latest state is known).

// warnUncertain logs every live message of a journal in which damage was
// skipped, for an operator to check: see above. unknownEnd is where the
// last unknown octet of the journal ends (the zero jpos when salvage
// explained all damage): a message whose last record starts before it
// may have had a later record there.
func (s *Store) warnUncertain(state map[string]*replayed, unknownEnd jpos) {
	for _, id := range slices.Sorted(maps.Keys(state)) {
		r := state[id]
		if r.gone {
			continue
		}
		if r.at.before(unknownEnd) {
			s.log.Warn("spool: message replayed from before damaged journal bytes: a later change to it (an update, or its delivery) may have been in them; it stays queued and may be sent twice",
				"id", id, "generation", r.at.gen, "offset", r.at.off)
		} else {
			s.log.Warn("spool: message replayed from after damaged journal bytes: its latest state is known",
				"id", id, "generation", r.at.gen, "offset", r.at.off)
		}
	}
}

// salvageSkips adds to recs, in their place, the records salvaged from
// the skipped ranges (salvageRecords), each logged at Warn. It also
// returns where the last unknown octet of the segment's skipped ranges
// ends, or -1 when salvage explained every one of them whole.
func (s *Store) salvageSkips(path string, data []byte, recs []record, skips []span) ([]record, int) {
	found := salvageRecords(data, skips)
	unknownEnd := -1
	for _, sk := range skips {
		i := slices.IndexFunc(found, func(r record) bool { return r.off >= sk.off && r.off < sk.off+sk.n })
		if i < 0 || found[i].off+frameLen(found[i]) < sk.off+sk.n {
			unknownEnd = sk.off + sk.n
		}
	}
	if found == nil {
		return recs, unknownEnd
	}
	for _, r := range found {
		s.log.Warn("spool: journal record salvaged from damaged bytes: its state's checksum holds, and its body's when it has one",
			"path", path, "offset", r.off, "id", r.id, "with_body", r.kind == recBody)
	}
	recs = append(slices.Clone(recs), found...)
	slices.SortStableFunc(recs, func(a, b record) int { return a.off - b.off })
	return recs, unknownEnd
}

// frameLen is the length of r's frame, as appendRecord writes it.
func frameLen(r record) int { return recHeader + 2 + len(r.id) + 4 + len(r.state) + len(r.body) }

// salvageRecords returns the records that skipped ranges start with and
// that vouch for themselves (see salvage), each with its offset: a
// damaged frame whose state and body are whole costs nothing. Only a range
// that a valid record follows is salvaged: at the end of a segment the
// damaged bytes may be an append a crash cut short, never acknowledged.
func salvageRecords(data []byte, skips []span) []record {
	var found []record
	for _, sk := range skips {
		if sk.last {
			continue
		}
		at := sk.off
		if at == 0 && sk.n > len(segmentMagic) {
			// A damaged header: the first record, if any, starts after it.
			at = len(segmentMagic)
		}
		if r, ok := salvage(data[at : sk.off+sk.n]); ok {
			r.off = at
			found = append(found, r)
		}
	}
	return found
}
