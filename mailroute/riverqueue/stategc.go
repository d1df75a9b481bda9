package riverqueue

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The rows of expired entries would otherwise stay in mailroute_state for
// good: Get and List only hide them. Each Store deletes its queue's
// expired rows at most every stateSweepEvery, in the background of a
// PutState or ListState (never of GetState, on the send path, and never
// waited for), in batches of stateSweepBatch, each its own short
// statement. Instances sweeping at once skip each other's rows (SKIP
// LOCKED), and a row renewed by a PutState since the sweep found it is
// not deleted: its expiry is compared again in the DELETE, on the row
// version the DELETE locks.

// stateExpiresMigration indexes the rows by queue and expiry, so that a
// sweep reads the expired rows and nothing else. CONCURRENTLY, so that a
// live table, grown large before this version, keeps taking writes while
// it is built: Migrate runs it outside a transaction.
const stateExpiresMigration = `CREATE INDEX CONCURRENTLY mailroute_state_expires ON mailroute_state (queue, expires)`

// stateSweepEvery is how often a Store sweeps its queue's expired rows.
const stateSweepEvery = 5 * time.Minute

// stateSweepBatch is how many rows one DELETE of a sweep removes at most.
const stateSweepBatch = 1000

// stateSweepTimeout bounds a sweep in the background.
const stateSweepTimeout = time.Minute

// stateSweepSQL deletes up to $3 rows of queue $1 expired at $2. The
// sub-select walks mailroute_state_expires and locks what it finds; the
// DELETE checks the expiry again so that a renewed row stays.
const stateSweepSQL = `DELETE FROM mailroute_state s
	USING (SELECT namespace, key FROM mailroute_state
		WHERE queue = $1 AND expires <= $2
		ORDER BY expires
		LIMIT $3
		FOR UPDATE SKIP LOCKED) d
	WHERE s.queue = $1 AND s.namespace = d.namespace AND s.key = d.key AND s.expires <= $2`

// concurrentMigration reports whether a migration must run outside a
// transaction, and the index it builds.
func concurrentMigration(sql string) (index string, ok bool) {
	f := strings.Fields(sql)
	if len(f) > 3 && strings.EqualFold(f[0], "CREATE") && strings.EqualFold(f[1], "INDEX") && strings.EqualFold(f[2], "CONCURRENTLY") {
		return f[3], true
	}
	return "", false
}

// runConcurrentMigration builds an index without blocking writes. A build
// interrupted before (a crash, a lost connection) leaves an invalid index
// of that name behind, dropped first.
func runConcurrentMigration(ctx context.Context, conn *pgx.Conn, index, sql string) error {
	var invalid bool
	err := conn.QueryRow(ctx, `SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)`, index).Scan(&invalid)
	if err != nil && err != pgx.ErrNoRows {
		return err
	}
	if invalid {
		if _, err := conn.Exec(ctx, `DROP INDEX CONCURRENTLY `+pgx.Identifier{index}.Sanitize()); err != nil {
			return err
		}
	}
	_, err = conn.Exec(ctx, sql)
	return err
}

// maybeSweepState starts a sweep in the background unless one is running
// or the last started less than stateSweepEvery ago.
func (s *Store) maybeSweepState() {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	now := time.Now()
	if s.sweeping || (!s.sweepLast.IsZero() && now.Sub(s.sweepLast) < stateSweepEvery) {
		return
	}
	s.sweeping, s.sweepLast = true, now
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stateSweepTimeout)
		defer cancel()
		s.sweepState(ctx, time.Now()) // failures are logged by sweepState
		s.sweepMu.Lock()
		s.sweeping = false
		s.sweepMu.Unlock()
	}()
}

// sweepState deletes the store's rows expired at now, batch after batch
// until one comes back short, and returns how many it deleted. A failure
// is logged: the rows stay hidden, and the next sweep tries again.
func (s *Store) sweepState(ctx context.Context, now time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.Pool.Exec(ctx, stateSweepSQL, s.queue(), now, stateSweepBatch)
		if err != nil {
			err = fmt.Errorf("riverqueue: state sweep: %w", schemaHint(err))
			s.logger().Warn("riverqueue: expired state rows not removed; they stay hidden until the next sweep",
				"queue", s.queue(), "removed", total, "err", err)
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < stateSweepBatch {
			return total, nil
		}
	}
}
