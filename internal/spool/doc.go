// Package spool is the durable store behind mailroute's retry queue: an
// embedded, crash-safe directory of queued messages, one process at a time.
//
// Every recipient that Send could neither deliver nor fail for good is
// written here before Send returns, and a process that starts again picks up
// everything still pending. The store keeps state only; when to retry, how
// often and when to give up is the queue's business (package mailroute),
// which calls Lease, Body and Update.
//
// # Layout
//
//	dir/lock                   flock(2) held while a Store is open (one process)
//	dir/reserve                disk space held for the files checkpoints will write
//	dir/journal/<gen>.log      the write-ahead journal, one file per generation
//	dir/queue/<id>.eml         the canonical message body, written once; for a body
//	                           the journal holds, lazily, by a checkpoint (see below)
//	dir/queue/<id>.json        the state: envelope, recipients, retry bookkeeping;
//	                           written lazily, by a checkpoint
//	dir/tmp/                   files being written; anything here at Open is debris
//	dir/corrupt/               entries (and journal segments) found damaged, moved aside
//
// Body and state sit in one directory so that one directory fsync makes both
// renames durable. A message whose body is in the journal has, until the
// checkpoint that drops the generation of its Enqueue, no file at all: its
// body is in its journal record, where Body reads it (one pread), and its
// state in the journal and in the store's memory. Creating a file costs far
// more than an append, and removing it more than a tombstone, and most
// messages are delivered before that checkpoint, so most never get a file.
//
// # Commit protocol
//
// The journal is the commit record. Every change is a record appended to
// the current generation: a state and body (an Enqueue of a body up to
// journalBodyMax, 256 KiB), a state (an Update, or an Enqueue of a larger
// body) or a tombstone (a delete, a quarantine, an Enqueue taken back). A
// record is framed by its length and a CRC-32C. Concurrent writers share
// commits: the records waiting when one round starts are written with one
// write and made durable with one fdatasync, and every writer of the round
// gets that round's own result. A round that fails is cut off the file
// again, so Open never replays an operation that reported an error.
// Segments are preallocated with zeros, so that an append's fdatasync
// flushes data only, not file-system metadata.
//
// Only when its record is committed does a call return nil:
//
//   - Enqueue (small body) writes no file: the store remembers where in
//     the generation its body's bytes are, and marks its state and body as
//     not on disk.
//   - Enqueue (large body) writes the body to tmp/, fsyncs it, renames it
//     into queue/ and fsyncs queue/ (shared by group commit), as before the
//     journal existed; then its state record is committed and the state
//     file written, without fsync.
//   - Update commits its state record and marks the entry's state as not
//     on disk; it writes no file.
//   - Deleting a message commits a tombstone, then removes its body file
//     and its state file, those that were written, without a directory
//     fsync. A message deleted before its checkpoint has none: the
//     tombstone is all.
//
// On an error before the commit nothing changes (an Enqueue removes what
// it wrote); a file step that fails after a large Enqueue's commit is
// taken back with a tombstone. A body file that neither a state file nor
// the journal names is an orphan that Open removes.
//
// Files written without fsync, and the states and bodies written by none,
// are made durable by a checkpoint: when a generation passes 64 MiB (and at
// Close) the journal rotates to a new one and waits for the writers whose
// records are in the old one to finish their file steps. Then, for every
// live message whose body or latest state is not on disk, it writes the
// body file from the journal's bytes and then the state file from the
// store's copy (encoded as by Enqueue, in place), without fsync; from then
// on Body reads the file. It makes every file durable with one syncfs(2)
// (outside Linux: an fsync of each file the generation names, then of the
// directories), and only then removes the old generation and closes its
// descriptor, which stays open until then for Body's reads (a lock keeps
// the close from cutting a read short). Writers go on appending to the new
// generation meanwhile. A file that cannot be written (EIO, ENOSPC) fails
// the checkpoint, logged at Error: every generation stays, the store goes
// on, and the next checkpoint writes it. A file step that fails after its
// commit (a file that cannot be removed) keeps every generation until the
// next Open has replayed it.
//
// On a full disk those files still need room, or the checkpoint could not
// drop the journal that holds the space: so the round that commits a record
// whose files are left unwritten first reserves room for them in
// dir/reserve (fallocate(2); not outside Linux), in blocks of 4 KiB per
// file, and fails with ENOSPC, before the commit, when it cannot. Deleting
// a message gives its share back at once, for the next Enqueue; the file
// keeps the blocks until the checkpoint, unless an append or a rotation
// finds the disk full, which trims the reserve to what the unwritten files
// need and tries again: on a full disk, deliveries make room for the
// journal, as their removed files used to. A checkpoint empties the
// reserve before it writes the files into the room.
//
// A message quarantined while its latest state is not on disk has that
// state written into corrupt/ from memory, beside its body; a body only the
// journal holds is written there from the journal's bytes, damaged or not.
//
// Open replays the journal before it scans queue/: every generation in
// order, the last record of a message winning. A tombstone removes the
// message's files; a state record rewrites a missing or different state
// file; a record's body rewrites a missing or different body file. So a
// state or body never written, or a file torn or lost in a crash before its
// checkpoint, is in place before anything reads it; a body whose state the
// replay could not write is kept (not an orphan) for the next Open. Then
// one syncfs makes the result durable and the replayed generations are
// removed: after Open every message has its files. A torn tail (a last
// append cut short, which was never acknowledged) is ignored with a log
// line at Info. Torn means a bad last record, with no valid one after it,
// that runs past the end of the file, or whose length holds and after
// which only zeros follow: an append cut short leaves exactly that. A
// flip in an acknowledged last record looks the same and costs that one
// record either way; a bad last record whose length is unusable is
// reported as damage (below), since its end is unknown.
//
// # Damage in the middle of the journal
//
// Damage before the tail costs only the damaged bytes: the replay skips
// from the bad record to the next offset where a valid record starts (a
// plausible length, a known kind, an ID and a state length that agree,
// and a CRC-32C that matches; journal_resync.go) and goes on from there,
// as LevelDB's log reader resynchronises at its next block. Zeros to the
// end of a segment still end it; a run of zeros followed by records is
// damage like any other. Each skipped range is logged at Warn with its
// offset and length and the segment copied to corrupt/. Of the damaged
// bytes only a record that vouches for itself is kept: one at the start of
// a skipped range whose state's own CRC-32C holds (and its body, if its
// size and CRC-32C match the state's), so damage confined to a frame's
// length or checksum costs nothing. Any other record in a skipped range is
// unknown, and the replay does not guess: every record that survives is
// applied as usual, the last of a message winning. A
// lost Enqueue loses its message (or, with a later record surviving,
// leaves a state whose body is missing, which the scan quarantines); a
// lost Update or tombstone brings a message back in an earlier state, to
// be sent again. RFC 5321 §6.1 forbids losing an accepted message and
// treats duplicates as SMTP's known, tolerated failure, so a message
// whose last surviving record is before the damage stays queued rather
// than being dropped for fear of a duplicate; every message the damaged
// journal still holds is logged at Warn with its ID, saying whether its
// last record is before unknown bytes (it may be sent twice) or after
// them, for an operator to check (replay_damage.go has the reasoning).
//
// # Detecting damage
//
// A state file is JSON with a format version and a CRC-32C of its payload,
// so a truncated or bit-flipped state is recognised rather than trusted
// (version 2, only for a message with the REQUIRETLS mark, so that a
// version of this package that does not know the mark refuses the file
// instead of dropping the mark). The
// state records the body's size and CRC-32C: Open compares the size (a crash
// can leave a short body on file systems that reorder data and metadata) and
// Body compares size and checksum before the bytes go out, whether it read
// them from the file or from the journal. A damaged entry, its state and its
// body, is moved to corrupt/ with a log line at Warn; Open never fails
// because of one entry, so a bad file cannot cause a crash loop. A body
// found damaged in the journal also means a damaged generation: the store
// checkpoints it away at once, writing the files of every message that
// depends on it, rather than leave them on a failing medium until a crash
// makes the replay skip the damage (and report the generation's messages
// for an operator to check).
//
// # What it does not do
//
// The store serves one process: leases live in memory and the lock file
// keeps a second process out (on systems with flock). It does not verify
// every body's checksum at Open, which would read the whole spool at start.
package spool
