package riverqueue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailroute/go-mailroute/mailroute"
)

// claimSQL leases due jobs: see the package documentation. $1 queue, $2
// now, $3 max, $4 lease deadline, $5 client ID. attempted_by keeps the last
// 100 holders, as River does.
const claimSQL = `
WITH due AS (
	SELECT id FROM river_job
	WHERE kind = '` + Kind + `' AND queue = $1
	  AND state IN ('available', 'scheduled', 'retryable')
	  AND scheduled_at <= $2
	ORDER BY scheduled_at, id
	LIMIT $3
	FOR UPDATE SKIP LOCKED
), job AS (
	UPDATE river_job j
	SET state = 'scheduled', scheduled_at = $4, attempted_at = $2,
	    attempted_by = (coalesce(j.attempted_by, '{}'::text[]) || $5::text)[greatest(1, coalesce(cardinality(j.attempted_by), 0) - 98):]
	FROM due WHERE j.id = due.id
	RETURNING j.id
)
UPDATE mailroute_message m
SET lease = m.lease + 1, leased_by = $5, lease_until = $4
FROM job WHERE m.job_id = job.id
RETURNING m.id, m.sender, m.created_at, m.recipients, m.lease, m.next_attempt`

// Lease implements mailroute.QueueStore: it claims up to max messages due
// at now for now+lease (Store.LeaseTimeout, when set, instead of lease),
// exclusively across every Store on the database.
func (s *Store) Lease(ctx context.Context, now time.Time, max int, lease time.Duration) ([]*mailroute.QueuedMessage, error) {
	if err := s.init(); err != nil {
		return nil, err
	}
	if s.LeaseTimeout > 0 {
		lease = s.LeaseTimeout
	}
	if lease <= 0 {
		return nil, fmt.Errorf("riverqueue: lease duration %v is not positive", lease)
	}
	if max <= 0 {
		return nil, nil
	}
	rows, err := s.Pool.Query(ctx, claimSQL, s.queue(), now, max, now.Add(lease), s.id)
	if err != nil {
		return nil, fmt.Errorf("riverqueue: lease: %w", schemaHint(err))
	}
	type leased struct {
		m    *mailroute.QueuedMessage
		gen  int64
		next time.Time
	}
	var got []leased
	for rows.Next() {
		var (
			l     leased
			m     mailroute.QueuedMessage
			rcpts []byte
		)
		if err := rows.Scan(&m.ID, &m.From, &m.Created, &rcpts, &l.gen, &l.next); err != nil {
			rows.Close()
			return nil, fmt.Errorf("riverqueue: lease: %w", err)
		}
		if m.Recipients, err = decodeRecipients(rcpts); err != nil {
			rows.Close()
			return nil, err
		}
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
	s.mu.Lock()
	for i, l := range got {
		s.leases[l.m.ID] = l.gen
		out[i] = l.m
	}
	s.mu.Unlock()
	return out, nil
}

// held returns the lease generation this Store holds on id, 0 for none.
func (s *Store) held(id string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leases[id]
}

// drop forgets the lease gen on id, unless a newer lease replaced it.
func (s *Store) drop(id string, gen int64) {
	s.mu.Lock()
	if s.leases[id] == gen {
		delete(s.leases, id)
	}
	s.mu.Unlock()
}

// lock takes the row locks of a message, its job first (the claim's order),
// and returns the job ID and the message's lease generation.
func lock(ctx context.Context, tx pgx.Tx, id string) (job, gen int64, err error) {
	err = tx.QueryRow(ctx, `SELECT j.id FROM river_job j
		WHERE j.id = (SELECT job_id FROM mailroute_message WHERE id = $1) FOR UPDATE`, id).Scan(&job)
	if err == nil {
		err = tx.QueryRow(ctx, `SELECT lease FROM mailroute_message WHERE id = $1 FOR UPDATE`, id).Scan(&gen)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("riverqueue: %s: %w", id, schemaHint(err))
	}
	return job, gen, nil
}

// jobState is the River state of a job due at next.
func jobState(next time.Time) string {
	if next.After(time.Now()) {
		return "scheduled"
	}
	return "available"
}

// Update implements mailroute.QueueStore: it records the message as it is
// after an attempt and ends the lease; without recipients the message and
// its job are deleted. When this Store holds a lease on the message that
// ran out and was granted again, nothing changes and the error wraps
// ErrLeaseLost. A message this Store did not lease is updated as is.
func (s *Store) Update(ctx context.Context, m *mailroute.QueuedMessage) error {
	if err := s.init(); err != nil {
		return err
	}
	held := s.held(m.ID)
	var rcpts []byte
	var next time.Time
	if len(m.Recipients) > 0 {
		var err error
		if rcpts, next, err = encodeRecipients(m.Recipients); err != nil {
			return err
		}
	}
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		job, gen, err := lock(ctx, tx, m.ID)
		if err != nil {
			return err
		}
		if held != 0 && gen != held {
			return fmt.Errorf("%w: %s", ErrLeaseLost, m.ID)
		}
		if len(m.Recipients) == 0 {
			// The message row goes with its job (ON DELETE CASCADE).
			_, err = tx.Exec(ctx, `DELETE FROM river_job WHERE id = $1`, job)
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE mailroute_message
			SET recipients = $2, next_attempt = $3, leased_by = NULL, lease_until = NULL
			WHERE id = $1`, m.ID, rcpts, next); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE river_job
			SET state = $2, scheduled_at = $3, attempt = least(attempt + 1, 32767)
			WHERE id = $1`, job, jobState(next), next)
		return err
	})
	if held != 0 {
		s.drop(m.ID, held)
	}
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLeaseLost) {
		return fmt.Errorf("riverqueue: update %s: %w", m.ID, err)
	}
	return err
}

// Release implements mailroute.QueueStore: the message becomes due again
// at its earliest next attempt. Releasing a message this Store holds no
// lease on, or whose lease ran out and was granted again, does nothing.
func (s *Store) Release(ctx context.Context, id string) error {
	if err := s.init(); err != nil {
		return err
	}
	held := s.held(id)
	if held == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		job, gen, err := lock(ctx, tx, id)
		if err != nil || gen != held {
			return err
		}
		var next time.Time
		if err := tx.QueryRow(ctx, `UPDATE mailroute_message SET leased_by = NULL, lease_until = NULL
			WHERE id = $1 RETURNING next_attempt`, id).Scan(&next); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE river_job SET state = $2, scheduled_at = $3 WHERE id = $1`, job, jobState(next), next)
		return err
	})
	s.drop(id, held)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("riverqueue: release %s: %w", id, err)
	}
	return nil
}
