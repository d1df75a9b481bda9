package riverqueue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailroute/go-mailroute/mailroute"
)

// claimSQL leases due jobs: see the package documentation. $1 queue, $2
// now, $3 max, $4 lease deadline, $5 client ID, $6 due-by cutoff, $7 the
// largest body returned with the claim (see bodyCache). A message
// whose lease has not ended at now is never claimed, whatever the cutoff
// (a flush asks for everything). attempted_by keeps the last 100 holders,
// as River does. Both rows are locked, so that a claim racing another
// re-reads the lease the other just took; the job first, as the outcomes'
// groups and Quarantine lock them (SKIP LOCKED never waits anyway).
//
// The walk is driven by the message rows, in the order of the index
// mailroute_message_due, and stops at $3: the job's conditions are a
// sub-select evaluated row by row, which the planner cannot turn into a
// join driven by river_job. As a join it did exactly that whenever
// river_job had no statistics for its conditions (a new table, or one
// analysed while nearly empty, then a burst of mail): every claim read
// the whole queue, and sorted it, to lease a few dozen.
const claimSQL = `
WITH due AS (
	SELECT m.job_id FROM mailroute_message m
	WHERE (m.lease_until IS NULL OR m.lease_until <= $2)
	  AND m.next_attempt <= $6
	  AND (SELECT true FROM river_job j
	       WHERE j.id = m.job_id AND j.kind = '` + Kind + `' AND j.queue = $1
	         AND j.state IN ('available', 'scheduled', 'retryable')
	       FOR UPDATE SKIP LOCKED)
	ORDER BY m.next_attempt, m.job_id
	LIMIT $3
	FOR UPDATE OF m SKIP LOCKED
), job AS (
	UPDATE river_job j
	SET state = 'scheduled', scheduled_at = $4, attempted_at = $2,
	    attempted_by = (coalesce(j.attempted_by, '{}'::text[]) || $5::text)[greatest(1, coalesce(cardinality(j.attempted_by), 0) - 98):]
	FROM due WHERE j.id = due.job_id
	RETURNING j.id
)
UPDATE mailroute_message m
SET lease = m.lease + 1, leased_by = $5, lease_until = $4
FROM job WHERE m.job_id = job.id
RETURNING m.id, m.sender, m.created_at, m.recipients, m.lease, m.next_attempt,
	CASE WHEN m.body_size <= $7 THEN m.body END, m.require_tls`

// Lease implements mailroute.QueueStore: it claims up to max messages due
// at req.DueBy for req.Duration (Store.LeaseTimeout, when set, instead),
// exclusively across every Store on the database. The token is the
// message's lease generation, which every claim increments.
func (s *Store) Lease(ctx context.Context, req mailroute.LeaseRequest) ([]*mailroute.QueuedMessage, error) {
	if err := s.init(); err != nil {
		return nil, err
	}
	lease := req.Duration
	if s.LeaseTimeout > 0 {
		lease = s.LeaseTimeout
	}
	if lease <= 0 {
		return nil, fmt.Errorf("riverqueue: lease duration %v is not positive", lease)
	}
	if req.Max <= 0 {
		return nil, nil
	}
	dueBy := req.DueBy
	if dueBy.IsZero() {
		dueBy = req.Now
	}
	until := req.Now.Add(lease)
	rows, err := s.Pool.Query(ctx, claimSQL, s.queue(), req.Now, req.Max, until, s.id, dueBy, prefetchMax)
	if err != nil {
		return nil, fmt.Errorf("riverqueue: lease: %w", schemaHint(err))
	}
	type leased struct {
		m    *mailroute.QueuedMessage
		next time.Time
		body []byte // nil when over prefetchMax
	}
	var got []leased
	for rows.Next() {
		var (
			l     leased
			m     mailroute.QueuedMessage
			rcpts []byte
			gen   int64
		)
		if err := rows.Scan(&m.ID, &m.From, &m.Created, &rcpts, &gen, &l.next, &l.body, &m.RequireTLS); err != nil {
			rows.Close()
			return nil, fmt.Errorf("riverqueue: lease: %w", err)
		}
		if m.Recipients, err = decodeRecipients(rcpts); err != nil {
			rows.Close()
			return nil, err
		}
		m.Lease = strconv.FormatInt(gen, 10)
		m.LeaseUntil = until
		l.m = &m
		got = append(got, l)
	}
	if err := rows.Err(); err != nil {
		// The claim did not commit: nothing is leased.
		return nil, fmt.Errorf("riverqueue: lease: %w", err)
	}
	slices.SortFunc(got, func(a, b leased) int {
		return cmp.Or(a.next.Compare(b.next), cmp.Compare(a.m.ID, b.m.ID))
	})
	out := make([]*mailroute.QueuedMessage, len(got))
	for i, l := range got {
		out[i] = l.m
		if l.body != nil {
			s.bodies.put(l.m.ID, l.body)
		}
	}
	return out, nil
}

// token parses a lease token; 0 (never a lease generation a claim hands
// out) for anything else.
func token(t string) int64 {
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

// lock takes the row locks of a message, its job first (the claim's order),
// and reports whether the lease generation gen still holds it: it is the
// message's current lease and has not been ended by Update or Release
// (leased_by is cleared then). A lease that ran out but was not claimed
// again still holds: nobody else has acted on the message.
func lock(ctx context.Context, tx pgx.Tx, id string, gen int64) (job int64, holds bool, err error) {
	err = tx.QueryRow(ctx, `SELECT j.id FROM river_job j
		WHERE j.id = (SELECT job_id FROM mailroute_message WHERE id = $1) FOR UPDATE`, id).Scan(&job)
	var cur int64
	var by *string
	if err == nil {
		err = tx.QueryRow(ctx, `SELECT lease, leased_by FROM mailroute_message WHERE id = $1 FOR UPDATE`, id).Scan(&cur, &by)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return 0, false, fmt.Errorf("riverqueue: %s: %w", id, schemaHint(err))
	}
	return job, gen != 0 && cur == gen && by != nil, nil
}

// jobState is the River state of a job due at next.
func jobState(next time.Time) string {
	if next.After(time.Now()) {
		return "scheduled"
	}
	return "available"
}

// Update implements mailroute.QueueStore: it records the message as it is
// after an attempt and ends the lease m.Lease names; without recipients the
// message and its job are deleted. When that lease no longer holds the
// message (it ran out and was claimed again, by this instance or another,
// or was already ended), nothing changes and the error wraps ErrLeaseLost.
// It returns once the outcome is committed, in one transaction with the
// outcomes of concurrent attempts (see "Outcomes are committed in groups"
// in the package documentation): one round trip and one commit for all of
// them.
func (s *Store) Update(ctx context.Context, m *mailroute.QueuedMessage) error {
	if err := s.init(); err != nil {
		return err
	}
	s.bodies.drop(m.ID)
	o := &outcome{kind: outcomeDelete, id: m.ID, gen: token(m.Lease)}
	if len(m.Recipients) > 0 {
		rcpts, next, err := encodeRecipients(m.Recipients)
		if err != nil {
			return err
		}
		o.kind, o.rcpts, o.next, o.state = outcomeUpdate, rcpts, next, jobState(next)
	}
	err := s.record(ctx, o)
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLeaseLost) {
		return fmt.Errorf("riverqueue: update %s: %w", m.ID, err)
	}
	return err
}

// Release implements mailroute.QueueStore: the message becomes due again
// at its earliest next attempt. Releasing with a token that no longer holds
// the message, or a message that is gone, does nothing. Like Update, it is
// committed together with concurrent outcomes.
func (s *Store) Release(ctx context.Context, id, tok string) error {
	if err := s.init(); err != nil {
		return err
	}
	s.bodies.drop(id)
	gen := token(tok)
	if gen == 0 {
		return nil
	}
	err := s.record(ctx, &outcome{kind: outcomeRelease, id: id, gen: gen})
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrLeaseLost) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("riverqueue: release %s: %w", id, err)
	}
	return nil
}

// Quarantine implements mailroute.QueueStore: the job is discarded in River
// (state 'discarded', the reason in its errors, where River's tools show
// it) and the message row stays for an operator, no longer leased nor
// listed.
func (s *Store) Quarantine(ctx context.Context, id, tok string, reason error) error {
	if err := s.init(); err != nil {
		return err
	}
	s.bodies.drop(id)
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		job, holds, err := lock(ctx, tx, id, token(tok))
		if err != nil {
			return err
		}
		if !holds {
			return fmt.Errorf("%w: %s", ErrLeaseLost, id)
		}
		entry, err := json.Marshal(map[string]any{
			"at": time.Now().UTC(), "attempt": 0, "error": "mailroute: quarantined: " + reason.Error(),
		})
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE mailroute_message SET leased_by = NULL, lease_until = NULL
			WHERE id = $1`, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE river_job SET state = 'discarded', finalized_at = now(),
			errors = coalesce(errors, '{}'::jsonb[]) || $2::jsonb WHERE id = $1`, job, entry)
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLeaseLost) {
		return fmt.Errorf("riverqueue: quarantine %s: %w", id, err)
	}
	return err
}
