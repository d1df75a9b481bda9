package spool

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
)

// flushAll makes every file the store changed durable, for a checkpoint:
// one syncfs(2) on Linux; elsewhere an fsync of each message file the
// journal's generations name, then of the directories.
func (s *Store) flushAll(j *journal) error {
	if err := s.fs.check(OpCheckpoint, j.spool); err != nil {
		return err
	}
	if s.fs.noSync {
		return nil
	}
	s.fs.syncs.Add(1)
	if runtime.GOOS == "linux" {
		return syncDirTree(j.spool, nil)
	}
	j.mu.Lock()
	var paths []string
	for _, seg := range append(slices.Clone(j.old), j.seg) {
		if seg == nil {
			continue
		}
		for _, id := range seg.ids {
			paths = append(paths, s.statePath(id), s.bodyPath(id))
		}
	}
	j.mu.Unlock()
	if err := syncDirTree(j.spool, paths); err != nil {
		return err
	}
	for _, d := range []string{s.queueDir, s.corruptDir} {
		if err := s.fs.syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// replayed is what the journal says about one message: its last state and
// the body of its last Enqueue, or that it is gone.
type replayed struct {
	gone  bool
	state []byte
	body  []byte // nil: not in the journal (a large body, fsynced in its file)
	at    jpos   // where its last record is
}

// jpos is a place in the journal: a generation and an offset in it.
type jpos struct {
	gen uint64
	off int
}

func (a jpos) before(b jpos) bool { return a.gen < b.gen || a.gen == b.gen && a.off < b.off }

// replay applies the journal at Open, before the directory scan: every
// generation in order, the last record of a message winning; then it makes
// the files durable and removes the generations. It returns the highest
// generation seen. A torn tail is logged at Info (an append that was never
// acknowledged); damage before the tail at Warn, with the segment copied
// to corrupt/. Nothing here makes Open fail but an unreadable journal
// directory; a file that cannot be repaired is logged and the journal
// kept, so the next Open tries again.
func (s *Store) replay() (uint64, error) {
	dents, err := os.ReadDir(s.j.dir)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	type seg struct {
		gen  uint64
		name string
	}
	var segs []seg
	for _, d := range dents {
		gen, ok := parseSegName(d.Name())
		if !ok || !d.Type().IsRegular() {
			s.log.Warn("spool: unexpected file in the journal directory, left alone", "path", filepath.Join(s.j.dir, d.Name()))
			continue
		}
		segs = append(segs, seg{gen, d.Name()})
	}
	if len(segs) == 0 {
		return 0, nil
	}
	slices.SortFunc(segs, func(a, b seg) int { return cmp.Compare(a.gen, b.gen) })

	state := map[string]*replayed{}
	keep := false // a segment could not be read: replay it again next time
	records := 0
	var left []*segment
	var (
		damaged    bool
		unknownEnd jpos // the end of the last octet skipped as damaged and not salvaged
	)
	for _, sg := range segs {
		path := filepath.Join(s.j.dir, sg.name)
		seg := &segment{gen: sg.gen, path: path}
		left = append(left, seg)
		data, err := os.ReadFile(path)
		if err != nil {
			s.log.Error("spool: cannot read a journal segment; it is kept for the next Open", "path", path, "err", err)
			keep = true
			continue
		}
		recs, _, perr := parseSegment(data)
		if errors.Is(perr, errTorn) {
			s.log.Info("spool: journal ends in an unfinished append, which was never acknowledged", "path", path, "detail", perr.Error())
		}
		var dmg *damageError
		if errors.As(perr, &dmg) {
			to := s.corruptName("journal-"+sg.name[:len(sg.name)-len(".log")], ".log")
			if err := s.fs.writeFile(to, data); err != nil {
				s.log.Error("spool: cannot copy a damaged journal segment aside", "path", path, "err", err)
			}
			s.log.Warn("spool: damaged journal segment: the damaged bytes are skipped, every valid record around them is replayed; copied aside",
				"path", path, "copy", to, "recovered_records", len(recs), "reason", perr.Error())
			for _, sk := range dmg.skips {
				s.log.Warn("spool: damaged journal bytes skipped: any record in them is unknown",
					"path", path, "offset", sk.off, "length", sk.n, "claimed_id", sk.id, "reason", sk.reason.Error())
			}
			damaged = true
			var end int
			if recs, end = s.salvageSkips(path, data, recs, dmg.skips); end >= 0 {
				unknownEnd = jpos{sg.gen, end}
			}
		}
		for _, r := range recs {
			records++
			seg.ids = append(seg.ids, r.id) // for flushAll outside Linux
			at := jpos{sg.gen, r.off}
			switch r.kind {
			case recTomb:
				state[r.id] = &replayed{gone: true, at: at}
			case recBody:
				state[r.id] = &replayed{state: r.state, body: r.body, at: at}
			case recState:
				if p := state[r.id]; p != nil && !p.gone {
					p.state, p.at = r.state, at
				} else {
					state[r.id] = &replayed{state: r.state, at: at}
				}
			}
		}
	}
	if damaged {
		s.warnUncertain(state, unknownEnd)
	}

	repaired := 0
	for _, id := range slices.Sorted(maps.Keys(state)) {
		n, err := s.applyReplayed(id, state[id])
		repaired += n
		if err != nil {
			s.log.Error("spool: cannot apply the journal to a message; the journal is kept for the next Open", "id", id, "err", err)
			keep = true
			if !state[id].gone {
				// Its state may exist nowhere but in the journal: the scan
				// must not take its body for an orphan.
				if s.replayLive == nil {
					s.replayLive = map[string]bool{}
				}
				s.replayLive[id] = true
			}
		}
	}
	last := segs[len(segs)-1].gen
	s.j.old = left // what flushAll covers
	if keep {
		// Not applied in full: no generation may go before the next Open
		// has replayed it, or a newer one dropped meanwhile could take the
		// tombstone that keeps an older record from coming back.
		s.j.old, s.j.unclean = left, true
		return last, nil
	}
	if err := s.flushAll(s.j); err != nil {
		s.log.Error("spool: cannot make the replayed journal durable; it is kept for the next Open", "err", err)
		s.j.old, s.j.unclean = left, true
		return last, nil
	}
	dropped := 0
	if err := s.j.drop(left, func(*segment) { dropped++ }); err != nil {
		// Applied and durable, so redundant: the checkpoints drop the rest,
		// oldest first, before any newer generation.
		s.log.Error("spool: cannot remove a replayed journal segment; a checkpoint will", "err", err)
	}
	s.j.old = left[dropped:]
	s.log.Info("spool: journal replayed", "segments", len(segs), "records", records, "files_repaired", repaired)
	return last, nil
}

// applyReplayed makes the files of id what the journal says, and returns
// how many it had to change.
func (s *Store) applyReplayed(id string, r *replayed) (int, error) {
	n := 0
	if r.gone {
		for _, p := range []string{s.statePath(id), s.bodyPath(id)} {
			err := s.fs.remove(p)
			if err == nil {
				n++
			} else if !errors.Is(err, fs.ErrNotExist) {
				return n, err
			}
		}
		return n, nil
	}
	if m, _, err := decodeState(r.state); err != nil || m.ID != id {
		// The record's checksum held, so this is not damage on disk but
		// a record this package would never write: trust neither.
		s.log.Warn("spool: journal record with an unusable state, ignored", "id", id, "err", err)
		return 0, nil
	}
	if r.body != nil {
		cur, err := os.ReadFile(s.bodyPath(id))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, err
		}
		if err != nil || !bytes.Equal(cur, r.body) {
			if err := s.replaceFile(s.bodyPath(id), r.body); err != nil {
				return n, err
			}
			n++
		}
	}
	cur, err := os.ReadFile(s.statePath(id))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return n, err
	}
	if err != nil || !bytes.Equal(cur, r.state) {
		if err := s.replaceFile(s.statePath(id), r.state); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// replaceFile writes data to final through a temporary file and a rename,
// without fsync (the caller makes it durable), so no reader ever sees a
// partial file.
func (s *Store) replaceFile(final string, data []byte) error {
	tmp := filepath.Join(s.tmpDir, filepath.Base(final)+".tmp")
	err := s.fs.writeFile(tmp, data)
	if err == nil {
		err = s.fs.rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
