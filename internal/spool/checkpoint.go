package spool

import (
	"errors"
	"fmt"
	"os"
	"slices"
)

// Checkpoints: a generation is dropped only once every file its records
// describe is durable. See the package documentation, Commit protocol.

// markUnclean records that a file step after a commit failed: the files
// no longer show what the journal says, so no generation may be dropped
// until the next Open has replayed them.
func (j *journal) markUnclean(why error) {
	j.mu.Lock()
	first := !j.unclean
	j.unclean = true
	j.mu.Unlock()
	if first {
		j.log.Error("spool: a file could not be changed after its journal commit; the journal is kept until the next Open replays it",
			"err", why)
	}
}

// runCheckpoint rotates to a new generation and makes the old ones
// redundant: see checkpointOld.
func (j *journal) runCheckpoint() {
	j.run <- struct{}{}
	j.mu.Lock()
	err := j.rotateLocked()
	j.mu.Unlock()
	<-j.run
	if err == nil {
		err = j.checkpointOld()
	}
	if err != nil {
		j.log.Error("spool: journal checkpoint failed; the journal grows until one succeeds", "err", err)
	}
	j.mu.Lock()
	j.lastCPErr = err
	again := j.cpAgain && !j.closed
	j.cpAgain = false
	close(j.cpDone)
	if again {
		j.cpDone = make(chan struct{})
	} else {
		j.cpRunning = false
	}
	j.mu.Unlock()
	if again {
		go j.checkpoint()
	}
}

// checkpointSoon starts a checkpoint at once, or when the running one
// ends (which may not cover the current generation), without waiting for
// a generation to fill: see Store.Body, for a generation found damaged.
func (j *journal) checkpointSoon() {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case j.closed:
	case j.cpRunning:
		j.cpAgain = true
	default:
		j.cpRunning = true
		j.cpDone = make(chan struct{})
		go j.checkpoint()
	}
}

// checkpointOld waits for the post-commit steps of every record in the
// rotated generations, writes the state files left unwritten, makes the
// files they changed durable, and removes
// the generations, oldest first. Writers go on appending to the current
// generation meanwhile.
func (j *journal) checkpointOld() error {
	j.mu.Lock()
	old := slices.Clone(j.old)
	j.mu.Unlock()
	if len(old) == 0 {
		return nil
	}
	for _, seg := range old {
		seg.pending.Wait()
	}
	// Every writer of the old generations is done, so every message they
	// changed is among the unwritten ones now: their state files first,
	// then one flush makes them durable with everything else. A state
	// that cannot be written keeps every generation (its message depends
	// on the journal) until a later checkpoint writes it.
	if err := j.writeStates(); err != nil {
		return err
	}
	if err := j.flush(); err != nil {
		return err
	}
	j.mu.Lock()
	unclean := j.unclean
	j.mu.Unlock()
	if unclean {
		return errors.New("kept for the next Open: a file step after a commit failed")
	}
	return j.drop(old, func(seg *segment) {
		j.mu.Lock()
		j.old = slices.DeleteFunc(j.old, func(s *segment) bool { return s == seg })
		j.mu.Unlock()
	})
}

// drop removes segments, oldest first, each removal made durable before
// the next: a newer generation may hold the tombstone that keeps an older
// one's record from coming back.
func (j *journal) drop(segs []*segment, dropped func(*segment)) error {
	for _, seg := range segs {
		seg.closeFile()
		if err := j.fs.remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := j.fs.syncDir(j.dir); err != nil {
			return err
		}
		if dropped != nil {
			dropped(seg)
		}
	}
	return nil
}

// closeFile closes the segment's descriptor once no body is being read
// from it.
func (seg *segment) closeFile() {
	seg.rmu.Lock()
	defer seg.rmu.Unlock()
	if seg.f != nil {
		seg.f.Close()
		seg.f = nil
	}
}

// close waits for a running checkpoint, then checkpoints everything,
// the current generation included, and closes the journal. The caller
// has waited for every writer. On an error the generations stay for the
// next Open to replay.
func (j *journal) close() error {
	j.mu.Lock()
	j.closed = true
	running, done := j.cpRunning, j.cpDone
	j.mu.Unlock()
	if running {
		<-done
	}
	j.mu.Lock()
	all := append(slices.Clone(j.old), j.seg)
	unclean := j.unclean
	j.mu.Unlock()
	err := j.writeStates()
	if err == nil {
		err = j.flush()
	}
	if err == nil && unclean {
		err = errors.New("kept for the next Open: a file step after a commit failed")
	}
	if err == nil {
		err = j.drop(all, nil)
	}
	for _, seg := range all {
		seg.closeFile()
	}
	if err != nil && !unclean {
		return fmt.Errorf("spool: journal checkpoint at Close (nothing is lost, the next Open replays it): %w", err)
	}
	return nil
}
