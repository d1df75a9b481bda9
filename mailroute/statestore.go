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
// returned, and the store removes it in time by itself, as the spool and
// River stores do (TLS-RPT writes new keys every day and relies on it).
// Implementations must be safe for concurrent use, and a nil error from
// PutState or DeleteState means the change is durable.
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

// memoryState is the StateStore of a Mailer whose queue keeps none. It
// drops what has expired by sweeping the whole map when a PutState finds
// it grown to twice the size the last sweep left (and at least
// memorySweepMin): a sweep costs O(1) per PutState, amortised, and the
// map holds at most about twice the live entries.
type memoryState struct {
	// now is the Mailer's clock, which the sweep goes by; nil: time.Now.
	now func() time.Time

	mu      sync.Mutex
	ns      map[string]map[string]memoryEntry
	n       int // entries in ns
	sweepAt int // n at which PutState sweeps; 0: memorySweepMin
}

// memorySweepMin is the fewest entries a memoryState sweeps.
const memorySweepMin = 256

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
	if _, ok := m[key]; !ok {
		s.n++
	}
	m[key] = memoryEntry{value: append([]byte(nil), value...), expires: expires}
	if s.n >= max(s.sweepAt, memorySweepMin) {
		s.sweepLocked(s.clock())
	}
	return nil
}

func (s *memoryState) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// sweepLocked drops the entries expired at now; s.mu is held.
func (s *memoryState) sweepLocked(now time.Time) {
	for name, m := range s.ns {
		for k, e := range m {
			if !now.Before(e.expires) {
				delete(m, k)
				s.n--
			}
		}
		if len(m) == 0 {
			delete(s.ns, name)
		}
	}
	s.sweepAt = 2 * s.n
}

func (s *memoryState) DeleteState(_ context.Context, namespace, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ns[namespace][key]; ok {
		delete(s.ns[namespace], key)
		s.n--
	}
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
// when it keeps state, else one in memory on the clock now.
func stateStoreOf(q QueueStore, now func() time.Time) StateStore {
	if s, ok := q.(StateStore); ok {
		return s
	}
	return &memoryState{now: now}
}
