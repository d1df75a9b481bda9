package riverqueue

// PendingOutcomes reports how many outcomes wait for the next commit of s,
// so that a test knows a group has formed before it lets the commit go.
func PendingOutcomes(s *Store) int {
	s.outcomes.mu.Lock()
	defer s.outcomes.mu.Unlock()
	return len(s.outcomes.pending)
}

// ClaimSQL is the claim's statement, for a test of its plan.
const ClaimSQL = claimSQL
