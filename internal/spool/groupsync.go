package spool

import "sync"

// groupSync shares one directory fsync among writers that need it at the
// same time (group commit). fsync of a directory costs a journal commit,
// milliseconds on a disk, and covers every rename done before it starts, so
// writers that arrive while one is running can all be served by the next.
//
// A writer joins the round that has not started yet (creating it if there is
// none) and then either sees the round completed by another member or takes
// the run token and performs it itself. A round leaves g.next before its
// fsync starts, so every member renamed its files before that fsync began:
// the fsync covers them all, and each member gets that round's own error
// (after a failed fsync a later one may succeed without the data being on
// disk, so errors are never inferred from other rounds).
type groupSync struct {
	run  chan struct{} // token: held by the member running a round
	mu   sync.Mutex
	next *syncRound // the round open for joining, nil when none
}

type syncRound struct {
	done chan struct{}
	err  error
}

func newGroupSync() *groupSync {
	return &groupSync{run: make(chan struct{}, 1)}
}

// do returns the result of a call of sync that started after do was called,
// possibly one made by another goroutine.
func (g *groupSync) do(sync func() error) error {
	g.mu.Lock()
	r := g.next
	if r == nil {
		r = &syncRound{done: make(chan struct{})}
		g.next = r
	}
	g.mu.Unlock()

	select {
	case <-r.done:
		return r.err
	case g.run <- struct{}{}:
	}
	// Holding the token: the round may have been run by a member that held
	// it just before.
	select {
	case <-r.done:
		<-g.run
		return r.err
	default:
	}
	g.mu.Lock()
	g.next = nil // r is the open round: only its runner closes it
	g.mu.Unlock()
	r.err = sync()
	close(r.done)
	<-g.run
	return r.err
}
