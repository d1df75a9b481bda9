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
// Leases and their tokens live in the database, so Mailers may share a
// Store value or each have their own.
//
// # What is stored
//
// Each queued message is one River job (kind "mailroute_message", queue
// Store.Queue, "mailroute" by default) and one row of the table
// mailroute_message, joined by the job's ID: the envelope sender, the
// creation time, the recipients with their attempts, next attempt and last
// error (jsonb), the REQUIRETLS mark (require_tls, set by Enqueue and never
// changed), the lease, and the canonical body (bytea, once per message
// whatever its number of recipients; PostgreSQL compresses large values).
// Bodies are limited to Store.MaxBodySize, 64 MiB by default (PostgreSQL's
// own limit for one value is 1 GiB); a body is held in memory while it is
// stored and while it is read back for an attempt. The job's scheduled_at is
// the earliest next attempt of the message's recipients; the row is deleted,
// with its job, when no recipient is left.
//
// # Leases
//
// The Mailer pulls work with Lease(LeaseRequest{Now, DueBy, Max,
// Duration}); every time is the caller's, never the database's, so a fake
// clock drives the store as it drives the embedded directory store
// (mailroute/spool). Lease claims, in one statement, up to Max messages
// of this store's kind and queue whose next attempt is not after DueBy
// (Now, or far ahead for a flush) and whose lease, if any, ended by Now,
// earliest next attempt first, with SELECT … FOR UPDATE SKIP LOCKED on the
// job and the message rows. It moves each claimed job's scheduled_at to the
// lease's end while recording the attempt (attempted_at, attempted_by =
// Store.ClientID), and sets a new lease generation, the holder and the
// lease's end on the message row.
// Exclusivity follows: two claims at once never lock the same rows (SKIP
// LOCKED, and a claim that finds a row just claimed re-reads its lease),
// and once a claim commits nobody else, not even a flush, gets the
// message until the lease ends. A lease therefore expires by itself: a
// message whose holder died is claimable at the lease's end, by any
// instance, without a reaper.
//
// The lease generation is the lease's token (QueuedMessage.Lease). Update,
// Release and Quarantine lock the rows and act only when the token is the
// current generation and the lease was not already ended: a holder whose
// lease ran out and was claimed again — by another instance or by the same
// one — cannot overwrite the new holder's outcome (ErrLeaseLost) nor end
// its lease. Update and Release set scheduled_at back to the earliest next
// attempt; Quarantine discards the job in River, with the reason in its
// errors, and keeps the message row for an operator.
//
// # Outcomes are committed in groups
//
// A queue drains as fast as its commits are made durable: each one waits
// for PostgreSQL's fsync of its log. So Update and Release do not commit
// alone: the Store gathers the outcomes of concurrent attempts, of every
// Mailer using it, and commits them together in one pipelined batch (one
// round trip, one implicit transaction), as River's batch completer does
// for its jobs: while one group's commit is in flight, the next group
// collects, and an outcome that finds no commit in flight goes at once.
// Each caller returns once its own outcome is committed, with its own
// result. The batch locks the group's jobs in the order of their IDs,
// then acts, set-wise, only on the messages whose lease the caller's token
// still holds: a stale token or a message that is gone fails only its own
// outcome (ErrLeaseLost, ErrNotFound). A group PostgreSQL refuses (an
// ERROR: it was rolled back) is tried again outcome by outcome, so that
// one bad row fails only itself; a group whose commit nobody can know
// (the connection was lost, a FATAL error) fails every member, which then
// stays leased, unchanged, until its lease ends.
//
// An attempt thus costs the store its share of two commits: the claim's,
// one statement for up to Max messages, which also returns every body of
// up to 256 KiB, so that Body reads none of those again; and its
// outcome's group. The claim walks an index in its own order (next
// attempt, job) and stops at Max, whatever the length of the queue.
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
// # Many messages at once
//
// Store.EnqueueBatch queues prepared messages (as the Mailer hands them to
// Enqueue: canonical bodies, recipients and times as given) all or none,
// in one transaction — the caller's under WithTx — with their River jobs
// in one statement (River's InsertManyTx) and their rows in one COPY: five
// round trips whatever the batch's size, instead of a transaction each.
//
// # Wake-up
//
// A Mailer on a Store starts new mail within milliseconds of its commit,
// whichever instance or process enqueued it, instead of at its poll of the
// queue (every second): the Store implements mailroute.QueueNotifier.
// Notify LISTENs, on a connection of its own outside Pool, to River's
// insert notifications ("<schema>.river_insert", payload {"queue": …}).
// Enqueue, EnqueueTx, EnqueueMessageTx and EnqueueBatch send one for mail
// due now: in the caller's transaction, which PostgreSQL delivers at
// commit and drops at rollback; after the commit for the store's own
// transactions, because a transaction that notifies holds PostgreSQL's
// notification lock through its commit, and concurrent committers would
// then flush the log one at a time. River's own notification, the same
// one, is spaced a day apart by the store's River client, which fetches
// nothing. A lost listening
// connection is made again after a second; the poll covers the gap. Each
// Mailer's Store thus holds one connection more than Pool's. (The
// outcomes' groups use one of Pool's connections at a time; the claims,
// and Body for larger bodies, the others.)
//
// # Migrations
//
// Nothing happens at import or at first use. Store.Migrate applies River's
// migrations (rivermigrate, line "main") and then this package's own
// (table mailroute_message and the claim's indexes, mailroute_state and
// its index on expiry, the version in mailroute_migration) under a
// session advisory lock, so five replicas starting at once may all call
// it; River's versions run one transaction each (PostgreSQL does not let
// a new enum value be used in the transaction that adds it), and so do
// the store's, except an index built CONCURRENTLY on a table that may
// already be large and in use (mailroute_state's), which runs outside
// one. It is idempotent.
//
// # State
//
// Each Store deletes its queue's expired mailroute_state rows, at most
// every five minutes, in the background of a PutState or ListState: up to
// 1,000 rows per DELETE, found through the index on expiry, until a batch
// comes back short. Concurrent sweeps by other instances skip each other's
// rows; a row renewed since the sweep found it stays. A failed sweep is
// logged (Store.Logger) and changes nothing.
package riverqueue
