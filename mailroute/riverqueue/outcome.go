package riverqueue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Outcomes are committed in groups (see the package documentation): a
// drain is bound by commits, each one waiting for the log's fsync, and
// one commit per Update or Release was the drain's limit. The loop that
// commits them runs only while outcomes wait, and there is no timer: an
// outcome that finds no commit in flight goes at once, the others gather
// behind it.

// maxOutcomeBatch is the most outcomes committed together; more wait for
// the next commit.
const maxOutcomeBatch = 1000

// outcomeKind is what an outcome does to its message.
type outcomeKind uint8

const (
	outcomeDelete  outcomeKind = iota // Update without recipients
	outcomeUpdate                     // Update with recipients left
	outcomeRelease                    // Release
)

// Whether an outcome was sent, and so whether its caller may give up on it
// without leaving its outcome unknown.
const (
	outcomeWaiting int32 = iota
	outcomeSent
	outcomeAbandoned // its caller's context ended before it was sent
)

// outcome is one Update or Release waiting for its commit.
type outcome struct {
	kind  outcomeKind
	id    string
	gen   int64
	rcpts []byte    // outcomeUpdate
	next  time.Time // outcomeUpdate
	state string    // outcomeUpdate: the job's River state

	phase atomic.Int32  // outcomeWaiting, outcomeSent, outcomeAbandoned
	err   error         // set before done is closed
	done  chan struct{} // closed when err is final
}

// outcomeBatcher holds the outcomes waiting for the next commit.
type outcomeBatcher struct {
	mu      sync.Mutex
	pending []*outcome
	running bool // commitOutcomes is running
}

// record commits o together with the outcomes of other callers (see
// above) and returns its own result: nil, ErrNotFound, ErrLeaseLost, or
// the error of the commit. When ctx ends before o was sent nothing changed
// and ctx's error is returned; when it ends during the commit the error
// says the outcome is unknown.
func (s *Store) record(ctx context.Context, o *outcome) error {
	o.done = make(chan struct{})
	b := &s.outcomes
	b.mu.Lock()
	b.pending = append(b.pending, o)
	if !b.running {
		// The loop runs while outcomes wait and ends when none does, so
		// that a Store needs no Close.
		b.running = true
		go s.commitOutcomes()
	}
	b.mu.Unlock()
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		if o.phase.CompareAndSwap(outcomeWaiting, outcomeAbandoned) {
			return ctx.Err()
		}
		return fmt.Errorf("riverqueue: %s: stopped waiting for the commit of its outcome, which may or may not have happened: %w", o.id, ctx.Err())
	}
}

// commitOutcomes commits the pending outcomes, a group at a time, until
// none is left.
func (s *Store) commitOutcomes() {
	ctx := context.Background()
	b := &s.outcomes
	for {
		b.mu.Lock()
		group, rest := nextGroup(b.pending, maxOutcomeBatch)
		b.pending = rest
		if len(group) == 0 && len(rest) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		if len(group) > 0 {
			s.commitGroup(ctx, group)
		}
	}
}

// nextGroup takes the outcomes to commit together out of pending, in
// their order: up to max, at most one per message (a second outcome for
// the same message waits for the next commit, so that they apply in
// turn), without those whose caller has given up. It marks the group's
// members sent; rest keeps the others waiting, in their order.
func nextGroup(pending []*outcome, max int) (group, rest []*outcome) {
	ids := make(map[string]bool, min(len(pending), max))
	for _, o := range pending {
		if len(group) == max || ids[o.id] {
			if o.phase.Load() != outcomeAbandoned {
				rest = append(rest, o)
			}
			continue
		}
		if !o.phase.CompareAndSwap(outcomeWaiting, outcomeSent) {
			continue // abandoned
		}
		ids[o.id] = true
		group = append(group, o)
	}
	return group, rest
}

// commitGroup commits a group and gives each member its result.
func (s *Store) commitGroup(ctx context.Context, group []*outcome) {
	err := s.sendGroup(ctx, group)
	if err != nil && len(group) > 1 && rolledBack(err) {
		// Nothing of the group was committed: each outcome on its own,
		// so that a row PostgreSQL refuses fails only its own.
		for _, o := range group {
			s.commitGroup(ctx, []*outcome{o})
		}
		return
	}
	for _, o := range group {
		if err != nil {
			o.err = err
		}
		close(o.done)
	}
}

// rolledBack reports whether err is PostgreSQL refusing a statement
// (severity ERROR: the transaction was rolled back, the session goes on),
// rather than a lost connection or a FATAL error, after which nobody knows
// whether the commit happened.
func rolledBack(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	sev := pe.SeverityUnlocalized
	if sev == "" {
		sev = pe.Severity
	}
	return sev == "ERROR"
}

// The statements of a group, one pipelined batch: PostgreSQL runs them up
// to the batch's Sync as one implicit transaction, all or nothing, so a
// group is one round trip and one commit whatever its size.
//
// lockGroupSQL locks the jobs of the group's messages, in the order of
// their IDs, so that two groups never wait for each other in a cycle (the
// claim never waits: SKIP LOCKED), and returns the messages that exist.
// Each action then acts only on the rows whose lease still holds (see
// lock) and returns the messages it acted on: a message that exists but is
// not returned has lost its lease.
const (
	lockGroupSQL = `SELECT m.id FROM river_job j JOIN mailroute_message m ON m.job_id = j.id
	WHERE m.id = ANY($1::text[]) ORDER BY j.id FOR UPDATE OF j`
	holdsGroupSQL = `m.id = o.id AND m.lease = o.gen AND m.leased_by IS NOT NULL`
	// The message rows go with their jobs (ON DELETE CASCADE).
	deleteGroupSQL = `WITH o AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS o(id, gen)),
d AS (SELECT m.id, m.job_id FROM mailroute_message m JOIN o ON ` + holdsGroupSQL + `)
DELETE FROM river_job j USING d WHERE j.id = d.job_id RETURNING d.id`
	updateGroupSQL = `WITH o AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[], $4::timestamptz[], $5::text[])
	AS o(id, gen, rcpts, next, state)),
m AS (UPDATE mailroute_message m SET recipients = o.rcpts, next_attempt = o.next, leased_by = NULL, lease_until = NULL
	FROM o WHERE ` + holdsGroupSQL + ` RETURNING m.id, m.job_id, o.next, o.state)
UPDATE river_job j SET state = m.state::river_job_state, scheduled_at = m.next, attempt = least(j.attempt + 1, 32767)
FROM m WHERE j.id = m.job_id RETURNING m.id`
	releaseGroupSQL = `WITH o AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS o(id, gen)),
m AS (UPDATE mailroute_message m SET leased_by = NULL, lease_until = NULL
	FROM o WHERE ` + holdsGroupSQL + ` RETURNING m.id, m.job_id, m.next_attempt)
UPDATE river_job j SET scheduled_at = m.next_attempt,
	state = (CASE WHEN m.next_attempt > $3 THEN 'scheduled' ELSE 'available' END)::river_job_state
FROM m WHERE j.id = m.job_id RETURNING m.id`
)

// sendGroup runs a group's statements and, when they committed, sets each
// member's err to ErrNotFound or ErrLeaseLost when it did not act. It
// returns the batch's error, which then is every member's.
func (s *Store) sendGroup(ctx context.Context, group []*outcome) error {
	var (
		all                       = make([]string, len(group))
		delIDs, updIDs, relIDs    []string
		delGens, updGens, relGens []int64
		rcpts                     [][]byte
		nexts                     []time.Time
		states                    []string
	)
	for i, o := range group {
		all[i] = o.id
		switch o.kind {
		case outcomeDelete:
			delIDs, delGens = append(delIDs, o.id), append(delGens, o.gen)
		case outcomeUpdate:
			updIDs, updGens = append(updIDs, o.id), append(updGens, o.gen)
			rcpts, nexts, states = append(rcpts, o.rcpts), append(nexts, o.next), append(states, o.state)
		case outcomeRelease:
			relIDs, relGens = append(relIDs, o.id), append(relGens, o.gen)
		}
	}
	b := &pgx.Batch{}
	b.Queue(lockGroupSQL, all)
	acts := 0
	if len(delIDs) > 0 {
		b.Queue(deleteGroupSQL, delIDs, delGens)
		acts++
	}
	if len(updIDs) > 0 {
		b.Queue(updateGroupSQL, updIDs, updGens, rcpts, nexts, states)
		acts++
	}
	if len(relIDs) > 0 {
		b.Queue(releaseGroupSQL, relIDs, relGens, time.Now())
		acts++
	}
	found := make(map[string]bool, len(group))
	acted := make(map[string]bool, len(group))
	br := s.Pool.SendBatch(ctx, b)
	err := readIDs(br, found)
	for i := 0; i < acts && err == nil; i++ {
		err = readIDs(br, acted)
	}
	// Close reads the batch to its end: the commit's outcome.
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return schemaHint(err)
	}
	for _, o := range group {
		switch {
		case acted[o.id]:
		case found[o.id]:
			o.err = fmt.Errorf("%w: %s", ErrLeaseLost, o.id)
		default:
			o.err = fmt.Errorf("%w: %s", ErrNotFound, o.id)
		}
	}
	return nil
}

// readIDs reads the next result of br, one message ID a row, into set.
func readIDs(br pgx.BatchResults, set map[string]bool) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		set[id] = true
	}
	return rows.Err()
}
