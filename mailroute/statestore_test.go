package mailroute

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/statetest"
)

func TestMemoryStateContract(t *testing.T) {
	statetest.Run(t, &memoryState{}, nil)
}

// stored counts the entries in the map itself, and checks s.n against it.
func (s *memoryState) stored(t testing.TB) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.ns {
		n += len(m)
	}
	if n != s.n {
		t.Fatalf("memoryState counts %d entries, holds %d", s.n, n)
	}
	return n
}

func TestMemoryStateExpiry(t *testing.T) {
	s := &memoryState{}
	statetest.RunExpiry(t, statetest.Storage{
		Store: s,
		Sweep: func(_ context.Context, now time.Time) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.sweepLocked(now)
			return nil
		},
		Stored: func() int { return s.stored(t) },
	})
}

// PutState sweeps by the store's clock once the map has doubled since the
// last sweep (and holds memorySweepMin): expired entries go, live ones
// all stay.
func TestMemoryStateSweepsAsItGrows(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	s := &memoryState{now: func() time.Time { return now }}
	ctx := context.Background()
	for i := range memorySweepMin - 1 {
		if err := s.PutState(ctx, "sts", fmt.Sprint("old", i), []byte("x"), now); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.stored(t); n != memorySweepMin-1 {
		t.Fatalf("swept before memorySweepMin: %d entries", n)
	}
	if err := s.PutState(ctx, "route", "live0", []byte("v"), now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := s.stored(t); n != 1 {
		t.Fatalf("%d entries after the sweep, want the live one", n)
	}
	for i := 1; i <= 1000; i++ {
		if err := s.PutState(ctx, "route", fmt.Sprint("live", i), []byte("v"), now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.stored(t); n != 1001 {
		t.Fatalf("%d entries, want every live one (1001)", n)
	}
	if l, err := s.ListState(ctx, "route", now); err != nil || len(l) != 1001 {
		t.Fatalf("ListState: %d, %v", len(l), err)
	}
}

// A Mailer without a state-keeping queue sweeps its memory by its own
// clock.
func TestMemoryStateOnMailerClock(t *testing.T) {
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	m, err := New(Config{Hostname: "sender.test", now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ms, ok := m.state.(*memoryState)
	if !ok || ms.now == nil || !ms.clock().Equal(at) {
		t.Fatalf("the Mailer's memory state is not on its clock: %T", m.state)
	}
}
