package mailroute

import (
	"context"
	"time"
)

// Spool keeps what a Mailer learns (StateStore) in Dir/state, beside the
// queue, written as durably as the queue itself.
var _ StateStore = (*Spool)(nil)

// GetState implements StateStore.
func (s *Spool) GetState(ctx context.Context, namespace, key string, now time.Time) ([]byte, bool, error) {
	st, err := s.open()
	if err != nil {
		return nil, false, err
	}
	return st.GetState(ctx, namespace, key, now)
}

// PutState implements StateStore.
func (s *Spool) PutState(ctx context.Context, namespace, key string, value []byte, expires time.Time) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	return st.PutState(ctx, namespace, key, value, expires)
}

// DeleteState implements StateStore.
func (s *Spool) DeleteState(ctx context.Context, namespace, key string) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	return st.DeleteState(ctx, namespace, key)
}

// ListState implements StateStore.
func (s *Spool) ListState(ctx context.Context, namespace string, now time.Time) (map[string][]byte, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	return st.ListState(ctx, namespace, now)
}
