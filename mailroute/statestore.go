package mailroute

import (
	"context"
	"sync"
	"time"
)

// StateStore keeps the small pieces of knowledge a Mailer learns while it
// sends — routes learned from refusals, MTA-STS policies — so that a
// restart, or another application instance on the same store, starts from
// what was already learned. A QueueStore may implement it as well (the
// spool store does, in its directory; the River store does, in PostgreSQL); a Mailer
// whose queue does not keeps the same knowledge in memory.
//
// Entries live in namespaces ("route", "mta-sts", …); keys are at most 255
// bytes and values at most 64 KiB. An entry past its expiry is never
// returned. Implementations must be safe for concurrent use, and a nil
// error from PutState or DeleteState means the change is durable.
type StateStore interface {
	// GetState returns the value stored under namespace and key, and
	// whether there is one that has not expired at now.
	GetState(ctx context.Context, namespace, key string, now time.Time) (value []byte, ok bool, err error)
	// PutState stores value under namespace and key until expires,
	// replacing any earlier value.
	PutState(ctx context.Context, namespace, key string, value []byte, expires time.Time) error
	// DeleteState removes the entry; removing a missing entry is not an
	// error.
	DeleteState(ctx context.Context, namespace, key string) error
	// ListState returns the entries of a namespace that have not expired
	// at now, by key.
	ListState(ctx context.Context, namespace string, now time.Time) (map[string][]byte, error)
}

// memoryState is the StateStore of a Mailer whose queue keeps none.
type memoryState struct {
	mu sync.Mutex
	ns map[string]map[string]memoryEntry
}

type memoryEntry struct {
	value   []byte
	expires time.Time
}

var _ StateStore = (*memoryState)(nil)

func (s *memoryState) GetState(_ context.Context, namespace, key string, now time.Time) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.ns[namespace][key]
	if !ok || !now.Before(e.expires) {
		return nil, false, nil
	}
	return append([]byte(nil), e.value...), true, nil
}

func (s *memoryState) PutState(_ context.Context, namespace, key string, value []byte, expires time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ns == nil {
		s.ns = make(map[string]map[string]memoryEntry)
	}
	m := s.ns[namespace]
	if m == nil {
		m = make(map[string]memoryEntry)
		s.ns[namespace] = m
	}
	m[key] = memoryEntry{value: append([]byte(nil), value...), expires: expires}
	return nil
}

func (s *memoryState) DeleteState(_ context.Context, namespace, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ns[namespace], key)
	return nil
}

func (s *memoryState) ListState(_ context.Context, namespace string, now time.Time) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]byte)
	for k, e := range s.ns[namespace] {
		if now.Before(e.expires) {
			out[k] = append([]byte(nil), e.value...)
		}
	}
	return out, nil
}

// stateStoreOf is the StateStore of a Mailer with queue q: the queue's own
// when it keeps state, else one in memory.
func stateStoreOf(q QueueStore) StateStore {
	if s, ok := q.(StateStore); ok {
		return s
	}
	return &memoryState{}
}
