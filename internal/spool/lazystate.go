package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// State files are written lazily: an Enqueue of a journaled body and an
// Update only commit their record, and the message's latest state lives in
// the journal and in memory. Creating a file costs far more kernel time
// than appending to the journal, and most messages are delivered (and
// deleted) before the generation that describes them is checkpointed, so
// most of them never get a state file at all. A checkpoint writes the
// state of every live message that has none, or an older one, before it
// makes the files durable and drops a generation: a generation is never
// dropped while a message depends on it. See the package documentation,
// Commit protocol.

// commitNew makes a new message, whose record is committed, visible to
// Lease, List and Body. A non-zero room is the reserve its round took for
// the files of a message that is only in the journal (see reserve.go),
// whose body is at off in seg; a zero room is a large body, whose body
// and state files are written. It runs before the writer's ticket is
// done, so that a checkpoint waiting for the writers of a generation
// finds the message among those whose files it must write.
func (s *Store) commitNew(e *entry, m *Message, info bodyInfo, room int64, seg *segment, off int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unwritten := room > 0
	e.msg, e.body, e.due, e.room = m, info, due(m), room
	e.stateFile, e.bodyFile = !unwritten, !unwritten
	e.jbody, e.jboff = seg, off
	s.markUnwrittenLocked(e, unwritten)
	s.schedule(e)
}

// markUnwrittenLocked records whether e's latest state is missing from its
// state file (or its body from its body file: see journalbody.go); once
// neither is, or e is gone, e's reserve goes back. s.mu is held.
func (s *Store) markUnwrittenLocked(e *entry, unwritten bool) {
	e.unwritten = unwritten
	if unwritten && !e.gone {
		s.unwritten[e] = struct{}{}
		return
	}
	delete(s.unwritten, e)
	s.res.give(e.room)
	e.room = 0
}

// writeStates writes the state file of every live message whose latest
// state is only in the journal, and its body file when the body is too,
// for a checkpoint (which then makes them durable with its flush). It
// tries every one; it fails when any write failed, and then the
// checkpoint keeps its generations: those messages stay in the set and
// the next checkpoint tries again.
func (s *Store) writeStates() error {
	s.res.free() // the room the files are written into
	s.mu.Lock()
	pending := make([]*entry, 0, len(s.unwritten))
	for e := range s.unwritten {
		pending = append(pending, e)
	}
	s.mu.Unlock()
	var first error
	failed := 0
	for _, e := range pending {
		if err := s.writeState(e); err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("cannot write the files of %d of %d messages (kept in the journal): %w", failed, len(pending), first)
	}
	return nil
}

// writeState writes e's files: the body from the journal when it is only
// there (journalbody.go), then the state from the store's copy, in place;
// both without fsync: until the checkpoint's flush the journal still
// holds them, and Open repairs a torn file from it. e.wmu keeps Update,
// delete and quarantine out meanwhile.
func (s *Store) writeState(e *entry) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	s.mu.Lock()
	if e.gone || !e.unwritten || e.msg == nil {
		delete(s.unwritten, e)
		s.mu.Unlock()
		return nil
	}
	m, info, seg, off := e.msg, e.body, e.jbody, e.jboff
	// Set before the attempt: a write that fails halfway leaves a file
	// that a delete must remove.
	e.stateFile = true
	if seg != nil {
		e.bodyFile = true
	}
	s.mu.Unlock()
	if seg != nil {
		if err := s.writeBody(e, m.ID, seg, off, info.size); err != nil {
			return err
		}
	}
	state, err := encodeState(m, info)
	if err == nil {
		err = s.fs.writeFile(s.statePath(m.ID), state)
	}
	if err != nil {
		return fmt.Errorf("state of %s: %w", m.ID, err)
	}
	s.mu.Lock()
	s.markUnwrittenLocked(e, false)
	s.mu.Unlock()
	return nil
}

// quarantineUnwritten is quarantine for a message whose latest state was
// never written: that state goes to corrupt/ from memory, beside the body,
// so corrupt/ holds both files as for any other entry; an older state file
// in queue/ is removed. A body that was only in the journal goes to
// corrupt/ from jbody, the journal's bytes, and a body file that a failed
// checkpoint may have left is removed.
func (s *Store) quarantineUnwritten(id string, state []byte, stateFile bool, jbody []byte, bodyFile bool, reason error) {
	var moved []string
	to := s.corruptName(id, extState)
	if err := s.fs.writeFile(to, state); err != nil {
		s.log.Error("spool: cannot write the state of a corrupt entry aside", "id", id, "path", to, "err", err)
	} else {
		moved = append(moved, to)
	}
	if stateFile {
		if err := s.fs.remove(s.statePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Error("spool: cannot remove the older state of a corrupt entry", "id", id, "err", err)
		}
	}
	from := s.bodyPath(id)
	if jbody != nil {
		bto := s.corruptName(id, extBody)
		if err := s.fs.writeFile(bto, jbody); err != nil {
			s.log.Error("spool: cannot write the body of a corrupt entry aside", "id", id, "path", bto, "err", err)
		} else {
			moved = append(moved, bto)
		}
		if bodyFile {
			if err := s.fs.remove(from); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Error("spool: cannot remove the body file of a corrupt entry", "id", id, "err", err)
			}
		}
	} else if _, err := os.Lstat(from); err == nil {
		bto := s.corruptName(id, extBody)
		if err := s.fs.rename(from, bto); err != nil {
			s.log.Error("spool: cannot move a corrupt entry aside", "id", id, "path", from, "err", err)
		} else {
			moved = append(moved, bto)
		}
	}
	s.log.Warn("spool: corrupt entry moved aside", "id", id, "reason", reason.Error(), "files", moved, "state_from", "memory")
}

// keptForJournal reports whether a body without a state file belongs to a
// message the journal holds, whose state replay could not write: it is
// not an orphan, and the next Open tries again.
func (s *Store) keptForJournal(id string) bool {
	if !s.replayLive[id] {
		return false
	}
	s.log.Error("spool: a message whose state is only in the journal is not loaded; its body is kept for the next Open",
		"id", id, "path", filepath.Join(s.queueDir, id+extBody))
	return true
}
