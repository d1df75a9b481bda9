// Package spool is the embedded store of mailroute's queue: one directory
// on the local disk, nothing to install.
//
//	store := &spool.Store{Dir: "/var/spool/myapp"}
//	defer store.Close() // after the Mailer
//	m, err := mailroute.New(mailroute.Config{Hostname: "mail.example.com", Queue: store})
//
// A [Store] keeps the queued messages (mailroute.QueueStore), what the
// Mailer learns (mailroute.StateStore: learned routes, MTA-STS policies)
// and sets aside the entries it finds damaged (mailroute.QuarantineReporter).
// It serves one process at a time. Several application instances sharing
// one queue use github.com/mailroute/go-mailroute/mailroute/riverqueue,
// PostgreSQL through River, instead.
//
// # Layout
//
//	Dir/lock              held while a Store is open (one process)
//	Dir/journal/          the write-ahead journal: every change, committed
//	                      before the call returns, replayed after a crash
//	Dir/queue/<id>.eml    the message body as it will be sent, written once,
//	                      at a checkpoint (until then in the journal) unless
//	                      larger than 256 KiB
//	Dir/queue/<id>.json   the envelope, recipients and retry bookkeeping,
//	                      with a CRC-32C of itself and of the body; written
//	                      at a checkpoint (until then in the journal)
//	Dir/reserve           room held for the files a checkpoint writes
//	Dir/state/            what the Mailer learned; expired entries are
//	                      removed at open and then at most hourly
//	Dir/tmp/              files being written; anything here at open is debris
//	Dir/corrupt/          entries found damaged, kept for an operator
package spool
