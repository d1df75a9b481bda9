package riverqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailroute/go-mailroute/mailroute"
)

// stateMigration makes the table of what the Mailers on this database
// learn — routes learned from refusals, MTA-STS policies — so that every
// instance shares them and a restart keeps them. Entries belong to the
// store's queue, like its mail. Expired rows are deleted by a sweep
// (stategc.go).
const stateMigration = `CREATE TABLE mailroute_state (
		queue     text NOT NULL,
		namespace text NOT NULL,
		key       text NOT NULL,
		value     bytea NOT NULL,
		expires   timestamptz NOT NULL,
		PRIMARY KEY (queue, namespace, key)
	);`

// The Store keeps a Mailer's knowledge in PostgreSQL, shared by every
// instance on the same database and queue.
var _ mailroute.StateStore = (*Store)(nil)

// GetState implements mailroute.StateStore.
func (s *Store) GetState(ctx context.Context, namespace, key string, now time.Time) ([]byte, bool, error) {
	if s.Pool == nil {
		return nil, false, errNoPool
	}
	var v []byte
	err := s.Pool.QueryRow(ctx, `SELECT value FROM mailroute_state
		WHERE queue = $1 AND namespace = $2 AND key = $3 AND expires > $4`,
		s.queue(), namespace, key, now).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("riverqueue: state: %w", schemaHint(err))
	}
	return v, true, nil
}

// PutState implements mailroute.StateStore.
func (s *Store) PutState(ctx context.Context, namespace, key string, value []byte, expires time.Time) error {
	if s.Pool == nil {
		return errNoPool
	}
	s.maybeSweepState()
	if value == nil {
		value = []byte{}
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO mailroute_state (queue, namespace, key, value, expires)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (queue, namespace, key) DO UPDATE SET value = excluded.value, expires = excluded.expires`,
		s.queue(), namespace, key, value, expires)
	if err != nil {
		return fmt.Errorf("riverqueue: state: %w", schemaHint(err))
	}
	return nil
}

// DeleteState implements mailroute.StateStore.
func (s *Store) DeleteState(ctx context.Context, namespace, key string) error {
	if s.Pool == nil {
		return errNoPool
	}
	if _, err := s.Pool.Exec(ctx, `DELETE FROM mailroute_state WHERE queue = $1 AND namespace = $2 AND key = $3`,
		s.queue(), namespace, key); err != nil {
		return fmt.Errorf("riverqueue: state: %w", schemaHint(err))
	}
	return nil
}

// ListState implements mailroute.StateStore.
func (s *Store) ListState(ctx context.Context, namespace string, now time.Time) (map[string][]byte, error) {
	if s.Pool == nil {
		return nil, errNoPool
	}
	s.maybeSweepState()
	rows, err := s.Pool.Query(ctx, `SELECT key, value FROM mailroute_state
		WHERE queue = $1 AND namespace = $2 AND expires > $3`, s.queue(), namespace, now)
	if err != nil {
		return nil, fmt.Errorf("riverqueue: state: %w", schemaHint(err))
	}
	defer rows.Close()
	out := make(map[string][]byte)
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("riverqueue: state: %w", err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("riverqueue: state: %w", err)
	}
	return out, nil
}
