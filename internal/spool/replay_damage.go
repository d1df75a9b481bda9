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
// (corrupt/) and costs only its message, and mail whose delivery was not
// recorded is delivered again. RocksDB calls this recovery mode
// kSkipAnyCorruptedRecords and does not make it its default, because its
// records are deltas that depend on one another; a record here is the
// whole state of one message, so a skipped record never makes a later one
// wrong.
//
// Nothing is taken from the damaged bytes themselves, whose checksum
// failed. The operator gets what is needed to check by hand:
// the segment copied to corrupt/, one line at Warn per skipped range
// (offset, length, and the ID its first header seems to name), and one
// line at Warn per message the damaged journal still holds, saying
// whether its last record is before the damage (a later change may be
// lost: it may be sent twice) or after it (its latest state is known).

// warnUncertain logs every live message of a journal in which damage was
// skipped, for an operator to check: see above.
func (s *Store) warnUncertain(state map[string]*replayed, lastDamage jpos) {
	for _, id := range slices.Sorted(maps.Keys(state)) {
		r := state[id]
		if r.gone {
			continue
		}
		if r.at.before(lastDamage) {
			s.log.Warn("spool: message replayed from before damaged journal bytes: a later change to it (an update, or its delivery) may have been in them; it stays queued and may be sent twice",
				"id", id, "generation", r.at.gen, "offset", r.at.off)
		} else {
			s.log.Warn("spool: message replayed from after damaged journal bytes: its latest state is known",
				"id", id, "generation", r.at.gen, "offset", r.at.off)
		}
	}
}
