package spool

import (
	"context"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
)

// A Store keeps what a Mailer learns (mailroute.StateStore) in Dir/state,
// beside the queue, written as durably as the queue itself.
var _ mailroute.StateStore = (*Store)(nil)

// GetState implements mailroute.StateStore.
func (s *Store) GetState(ctx context.Context, namespace, key string, now time.Time) ([]byte, bool, error) {
	st, err := s.open()
	if err != nil {
		return nil, false, err
	}
	return st.GetState(ctx, namespace, key, now)
}

// PutState implements mailroute.StateStore.
func (s *Store) PutState(ctx context.Context, namespace, key string, value []byte, expires time.Time) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	return st.PutState(ctx, namespace, key, value, expires)
}

// DeleteState implements mailroute.StateStore.
func (s *Store) DeleteState(ctx context.Context, namespace, key string) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	return st.DeleteState(ctx, namespace, key)
}

// ListState implements mailroute.StateStore.
func (s *Store) ListState(ctx context.Context, namespace string, now time.Time) (map[string][]byte, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	return st.ListState(ctx, namespace, now)
}
