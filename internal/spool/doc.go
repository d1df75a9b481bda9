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
//	dir/lock              flock(2) held while a Store is open (one process)
//	dir/queue/<id>.eml    the canonical message body, written once
//	dir/queue/<id>.json   the state: envelope, recipients, retry bookkeeping
//	dir/tmp/              files being written; anything here at Open is debris
//	dir/corrupt/          entries Open or Body found damaged, moved aside
//
// Body and state sit in one directory so that one directory fsync makes both
// renames durable.
//
// # Commit protocol
//
// A state file is the commit record: a message exists exactly when its state
// file does. Enqueue therefore writes, in this order:
//
//  1. the body to tmp/<id>.eml.tmp, streamed (bodies reach 25 MiB and more),
//     then fsync, then rename to queue/<id>.eml;
//  2. the state to tmp/<id>.json.tmp, then fsync, then rename to
//     queue/<id>.json;
//  3. an fsync of queue/, which makes both renames durable.
//
// Only then does Enqueue return nil. On an error at any step (ENOSPC, EIO)
// it removes what it wrote, state first, so that at worst a body without a
// state is left, and Open removes those. Update rewrites the state the same
// way (steps 2 and 3); the body never changes after Enqueue, so the queue
// can keep a stable Message-ID in Meta and send the same bytes on every
// retry. Deleting a message removes the state first, then the body.
//
// Directory fsyncs are shared between concurrent writers (group commit): a
// writer that has renamed its files joins the next fsync of queue/ instead
// of issuing its own, and one of the waiting writers runs it for all of
// them. Options.NoGroupCommit turns this off for comparison.
//
// # Detecting damage
//
// A state file is JSON with a format version and a CRC-32C of its payload,
// so a truncated or bit-flipped state is recognised rather than trusted. The
// state records the body's size and CRC-32C: Open compares the size (a crash
// can leave a short body on file systems that reorder data and metadata) and
// Body compares the checksum before the bytes go out. A damaged entry, its
// state and its body, is moved to corrupt/ with a log line at Warn; Open
// never fails because of one entry, so a bad file cannot cause a crash loop.
//
// # What it does not do
//
// The store serves one process: leases live in memory and the lock file
// keeps a second process out (on systems with flock). It does not verify
// every body's checksum at Open, which would read the whole spool at start.
package spool
