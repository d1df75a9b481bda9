package riverqueue

import (
	"context"
	"time"
)

// SweepState runs s's sweep of expired state rows at now and waits for it.
func SweepState(ctx context.Context, s *Store, now time.Time) (int64, error) {
	return s.sweepState(ctx, now)
}

// HoldSweeps keeps s from sweeping in the background, so that a test
// decides when sweeps run.
func HoldSweeps(s *Store) {
	s.sweepMu.Lock()
	s.sweepLast = time.Now().Add(1000 * time.Hour)
	s.sweepMu.Unlock()
}

// StateSweepSQL is the sweep's statement, for a test of its plan.
const StateSweepSQL = stateSweepSQL
