package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxStateSize bounds what Open reads of a state file. Real ones are a few
// hundred bytes per recipient; a larger file is not one of ours and is
// quarantined without being read into memory.
const maxStateSize = 16 << 20

// recover loads the queue directory at Open: committed messages are
// loaded, unfinished writes and orphan bodies (no state file, and no
// journal record that replay failed to write) removed, damaged
// entries quarantined. Only a directory that cannot be read is an error;
// anything wrong with one entry is logged and handled, so a bad file can
// never keep the process from starting.
func (s *Store) recover() error {
	tmp, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, d := range tmp {
		// A crash during a write leaves its temporary files; they never
		// hold anything committed.
		p := filepath.Join(s.tmpDir, d.Name())
		if err := s.fs.remove(p); err != nil {
			s.log.Error("spool: cannot remove an unfinished file", "path", p, "err", err)
		}
	}

	dents, err := os.ReadDir(s.queueDir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	states := map[string]bool{}
	bodies := map[string]bool{}
	for _, d := range dents {
		name := d.Name()
		ext := filepath.Ext(name)
		id := strings.TrimSuffix(name, ext)
		switch {
		case !d.Type().IsRegular() || checkID(id) != nil || (ext != extState && ext != extBody):
			s.log.Warn("spool: unexpected file in the queue directory, left alone", "path", filepath.Join(s.queueDir, name))
		case ext == extState:
			states[id] = true
		default:
			bodies[id] = true
		}
	}

	loaded, quarantined, orphans := 0, 0, 0
	for id := range states {
		m, info, err := s.load(id, bodies[id])
		if err != nil {
			s.quarantine(id, err)
			s.opened = append(s.opened, Quarantined{ID: id, Reason: err})
			quarantined++
			continue
		}
		e := &entry{msg: m, body: info, due: due(m), idx: -1, stateFile: true, bodyFile: true}
		s.entries[id] = e
		s.schedule(e)
		loaded++
	}
	for id := range bodies {
		if states[id] || s.keptForJournal(id) {
			continue
		}
		// Neither a state file nor a journal record the replay could not
		// apply: the Enqueue was never committed (or was taken back), or
		// the message was deleted. Either way it does not exist.
		orphans++
		if err := s.fs.remove(s.bodyPath(id)); err != nil {
			s.log.Error("spool: cannot remove a body without state", "id", id, "err", err)
		}
	}
	s.replayLive = nil
	if len(tmp) > 0 || quarantined > 0 || orphans > 0 {
		s.syncAfterRecovery()
	}
	s.log.Info("spool: opened", "dir", filepath.Dir(s.queueDir), "messages", loaded,
		"quarantined", quarantined, "orphan_bodies", orphans, "unfinished", len(tmp))
	return nil
}

// load reads and checks the state of id and the size of its body.
func (s *Store) load(id string, haveBody bool) (*Message, bodyInfo, error) {
	f, err := os.Open(s.statePath(id))
	if err != nil {
		return nil, bodyInfo{}, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	f.Close()
	if err != nil {
		return nil, bodyInfo{}, err
	}
	if len(data) > maxStateSize {
		return nil, bodyInfo{}, fmt.Errorf("%w: larger than %d bytes", errBadState, maxStateSize)
	}
	m, info, err := decodeState(data)
	if err != nil {
		return nil, bodyInfo{}, err
	}
	if m.ID != id {
		return nil, bodyInfo{}, fmt.Errorf("%w: holds message %q", errBadState, m.ID)
	}
	if !haveBody {
		return nil, bodyInfo{}, errors.New("body file missing")
	}
	// Size only: checking every checksum would read the whole spool at
	// start. Body checks the checksum before the bytes are sent.
	fi, err := os.Stat(s.bodyPath(id))
	if err != nil {
		return nil, bodyInfo{}, err
	}
	if fi.Size() != info.size {
		return nil, bodyInfo{}, fmt.Errorf("body is %d bytes, state says %d", fi.Size(), info.size)
	}
	return m, info, nil
}

// quarantine moves the state and body of id, those that exist, to
// corrupt/ and logs why. A file that cannot be moved stays where it is and
// is logged; the entry is not loaded either way.
func (s *Store) quarantine(id string, reason error) {
	var moved []string
	for _, ext := range []string{extState, extBody} {
		from := filepath.Join(s.queueDir, id+ext)
		if _, err := os.Lstat(from); err != nil {
			continue
		}
		to := s.corruptName(id, ext)
		if err := s.fs.rename(from, to); err != nil {
			s.log.Error("spool: cannot move a corrupt entry aside", "id", id, "path", from, "err", err)
			continue
		}
		moved = append(moved, to)
	}
	s.log.Warn("spool: corrupt entry moved aside", "id", id, "reason", reason.Error(), "files", moved)
}

// corruptName is a free name in corrupt/ for id+ext: the same ID can be
// quarantined more than once (an ID reused after an earlier quarantine).
func (s *Store) corruptName(id, ext string) string {
	name := filepath.Join(s.corruptDir, id+ext)
	for n := 1; ; n++ {
		if _, err := os.Lstat(name); err != nil {
			return name // free, or unknowable: then the rename fails and says why
		}
		name = filepath.Join(s.corruptDir, id+"."+strconv.Itoa(n)+ext)
	}
}

// syncAfterRecovery makes removals and quarantines durable. Failing is not
// fatal: undone, they are redone at the next Open.
func (s *Store) syncAfterRecovery() {
	for _, d := range []string{s.tmpDir, s.queueDir, s.corruptDir} {
		if err := s.fs.syncDir(d); err != nil {
			s.log.Error("spool: fsync after recovery failed", "dir", d, "err", err)
		}
	}
}
