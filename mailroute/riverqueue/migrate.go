package riverqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// migrateLock is the pg_advisory_xact_lock key that serialises Migrate
// across instances ("mailroute" in ASCII).
const migrateLock int64 = 0x6d61696c726f7574

// migrateLockPoll is how often a Migrate waiting for another's tries the
// lock again.
const migrateLockPoll = 50 * time.Millisecond

// migrations are this package's own, applied after River's, in order; the
// version is the index plus one. Each runs in a transaction of its own
// with the row that records it, except a CREATE INDEX CONCURRENTLY, which
// PostgreSQL runs only outside one: its row is recorded after it.
var migrations = []string{
	// 1: the messages and the claim's index.
	`CREATE TABLE mailroute_message (
		id           text PRIMARY KEY,
		job_id       bigint NOT NULL UNIQUE REFERENCES river_job (id) ON DELETE CASCADE,
		sender       text NOT NULL,
		created_at   timestamptz NOT NULL,
		recipients   jsonb NOT NULL,
		next_attempt timestamptz NOT NULL,
		lease        bigint NOT NULL DEFAULT 0,
		leased_by    text,
		lease_until  timestamptz,
		body_size    bigint NOT NULL,
		body         bytea NOT NULL
	);
	CREATE INDEX river_job_mailroute_due ON river_job (queue, scheduled_at, id)
		WHERE kind = 'mailroute_message' AND state IN ('available', 'scheduled', 'retryable');`,
	// 2: what the Mailers learn (mailroute.StateStore; state.go).
	stateMigration,
	// 3: the claim walks the messages in its order (next attempt, job)
	// and stops at its LIMIT, instead of sorting every due message: with
	// 5,000 queued a claim took 14 ms, most of a drain's time. The index
	// of version 1 then serves no query, and every claim and Update moved
	// a row in it.
	`CREATE INDEX mailroute_message_due ON mailroute_message (next_attempt, job_id);
	DROP INDEX river_job_mailroute_due;`,
	// 4: the sweep of expired state finds them without reading the
	// table (stategc.go); built CONCURRENTLY, outside a transaction.
	stateExpiresMigration,
	// 5: the REQUIRETLS mark (mailroute.QueuedMessage.RequireTLS), which
	// Enqueue stores and nothing changes; the messages queued before it
	// had none.
	requireTLSMigration,
}

// requireTLSMigration may run again without harm: on a database whose
// record of the versions was set back by hand, as a test of version 4's
// rebuild does.
const requireTLSMigration = `ALTER TABLE mailroute_message ADD COLUMN IF NOT EXISTS require_tls boolean NOT NULL DEFAULT false;`

// Migrate brings the database to the schema this package needs: River's
// migrations first (rivermigrate, up to the latest, each version in its own
// transaction as River requires), then the store's tables and indexes,
// each version in its own transaction too (see migrations). A session
// advisory lock serialises callers, so any number of instances may call it
// at start; a database already up to date is left alone. Nothing else in
// the package changes the schema.
func (s *Store) Migrate(ctx context.Context) error {
	if s.Pool == nil {
		return errNoPool
	}
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("riverqueue: migrate: %w", err)
	}
	defer conn.Release()
	// Polled, not waited for: a session waiting in pg_advisory_lock holds
	// a snapshot, which a CREATE INDEX CONCURRENTLY of the holder waits
	// out, and PostgreSQL would end the two with a deadlock.
	for {
		var locked bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, migrateLock).Scan(&locked); err != nil {
			return fmt.Errorf("riverqueue: migrate: lock: %w", err)
		}
		if locked {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("riverqueue: migrate: lock: %w", ctx.Err())
		case <-time.After(migrateLockPoll):
		}
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLock)

	migrator, err := rivermigrate.New(riverpgxv5.New(s.Pool), &rivermigrate.Config{Logger: s.logger()})
	if err != nil {
		return fmt.Errorf("riverqueue: migrate: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("riverqueue: River's migrations: %w", err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS mailroute_migration (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("riverqueue: migrate: %w", err)
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM mailroute_migration`).Scan(&have); err != nil {
		return fmt.Errorf("riverqueue: migrate: %w", err)
	}
	for v := have + 1; v <= len(migrations); v++ {
		sql := migrations[v-1]
		var err error
		if index, ok := concurrentMigration(sql); ok {
			err = runConcurrentMigration(ctx, conn.Conn(), index, sql)
			if err == nil {
				_, err = conn.Exec(ctx, `INSERT INTO mailroute_migration (version) VALUES ($1)`, v)
			}
		} else {
			err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, sql); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO mailroute_migration (version) VALUES ($1)`, v)
				return err
			})
		}
		if err != nil {
			return fmt.Errorf("riverqueue: migration %d: %w", v, err)
		}
	}
	return nil
}

// schemaHint explains a missing table: Migrate was not called.
func schemaHint(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return fmt.Errorf("%w (call riverqueue.Store.Migrate first)", err)
	}
	return err
}
