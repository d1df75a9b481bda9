// Package riverqueue is a mailroute queue store in PostgreSQL, through River
// (github.com/riverqueue/river): one queue shared by every instance of an
// application, so that mail deferred on an instance that dies is retried by
// another, and each queued message is attempted by one instance at a time.
// It is a module of its own, so that River and pgx enter the module graph
// only of programs that use it:
//
//	go get github.com/mailroute/go-mailroute/mailroute/riverqueue
//
//	pool, _ := pgxpool.New(ctx, "postgres://…")
//	store := &riverqueue.Store{Pool: pool}
//	if err := store.Migrate(ctx); err != nil { … } // once, at deploy or start
//	m, _ := mailroute.New(mailroute.Config{Queue: store, …})
//
// Give each Mailer its own Store value (they may share the pool): a Store
// remembers the leases it holds.
//
// # What is stored
//
// Each queued message is one River job (kind "mailroute_message", queue
// Store.Queue, "mailroute" by default) and one row of the table
// mailroute_message, joined by the job's ID: the envelope sender, the
// creation time, the recipients with their attempts, next attempt and last
// error (jsonb), the lease, and the canonical body (bytea, once per message
// whatever its number of recipients; PostgreSQL compresses large values).
// Bodies are limited to Store.MaxBodySize, 64 MiB by default (PostgreSQL's
// own limit for one value is 1 GiB); a body is held in memory while it is
// stored and while it is read back for an attempt. The job's scheduled_at is
// the earliest next attempt of the message's recipients; the row is deleted,
// with its job, when no recipient is left.
//
// # Leases
//
// The Mailer pulls work with Lease(now, max, lease); every time is the
// caller's, never the database's, so a fake clock drives the store as it
// drives the embedded Spool. Lease claims, in one statement, up to max jobs
// of this store's kind and queue whose scheduled_at is not after now, in
// scheduled_at order, with SELECT … FOR UPDATE SKIP LOCKED, and moves each
// claimed job's scheduled_at to now+lease while recording the attempt
// (attempted_at, attempted_by = Store.ClientID) and a new lease generation
// on the message row. Exclusivity follows: two instances claiming at once
// never lock the same row (SKIP LOCKED), and once the claim commits the job
// is no longer due until its lease ends. A lease therefore expires by
// itself: a job whose holder died becomes due again at now+lease, for any
// instance, without a reaper. Update and Release end the lease and set
// scheduled_at back to the earliest next attempt; they are fenced by the
// lease generation, so an instance whose lease ran out and was granted
// again cannot overwrite the new holder's outcome (Update returns
// ErrLeaseLost).
//
// Leased jobs stay in River's "scheduled" state rather than "running": a
// River client of the application running maintenance on the same database
// would otherwise "rescue" them after an hour and discard them (no River
// worker exists for this kind). River's scheduler moving a due job to
// "available" changes nothing here. Do not let a River client work the
// queue named by Store.Queue.
//
// Clocks: a lease ends when another instance's now passes the deadline the
// holder computed with its own clock, so clock skew between instances
// shortens or lengthens leases by the skew (NTP keeps it to milliseconds).
//
// # Transactional enqueue
//
// Mail that must go out exactly when the application's own transaction
// commits (the welcome mail of an account being created) is enqueued
// inside that transaction, through River's InsertTx: a rollback leaves
// nothing to send, a commit makes it due. Either through the Mailer, with
// every check and addition of Send (address syntax, canonical body,
// MaxMessageSize, Date/Message-ID, DKIM):
//
//	tx, _ := pool.Begin(ctx)
//	… the application's own statements on tx …
//	id, err := mailer.Enqueue(riverqueue.WithTx(ctx, tx), from, to, msg)
//	… tx.Commit(ctx)
//
// or without a Mailer at hand, with Store.EnqueueTx, which checks the
// addresses and canonicalises the body as Send does but does not complete
// or sign the message.
//
// # Migrations
//
// Nothing happens at import or at first use. Store.Migrate applies River's
// migrations (rivermigrate, line "main") and then this package's own
// (table mailroute_message, an index on river_job for the claim, the version
// in mailroute_migration) under a session advisory lock, so five replicas
// starting at once may all call it; River's versions run one transaction
// each (PostgreSQL does not let a new enum value be used in the transaction
// that adds it), the store's in one. It is idempotent.
package riverqueue
