package spool

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// The steps of the commit protocol (see the package documentation): files
// are written under tmp/, made durable, renamed into queue/, and the
// renames made durable. With syncfs (Linux 5.8 and later, group commit on)
// the two "made durable" steps are each one syncfs(2) shared by every
// writer waiting at that moment, whichever step it waits for: a message
// then costs no sync of its own, where it would otherwise cost an fsync
// per file and a share of a directory fsync.

// tmpFile is a file written under tmp/ and not yet renamed to final.
type tmpFile struct {
	f          *os.File
	tmp, final string
}

// writeTmp writes a file under tmp/ with write. The file stays open for
// install, which makes it durable; on an error it is removed.
func (s *Store) writeTmp(final string, write func(io.Writer) error) (*tmpFile, error) {
	t := &tmpFile{tmp: filepath.Join(s.tmpDir, filepath.Base(final)+".tmp"), final: final}
	f, err := s.fs.create(t.tmp)
	if err != nil {
		return nil, err
	}
	t.f = f
	if err := write(faultWriter{&s.fs, f}); err != nil {
		s.discard(t)
		return nil, err
	}
	return t, nil
}

// install makes the contents of ts durable, then renames them into queue/
// in order. The renames are durable only after syncQueue. On an error the
// files not renamed yet are removed from tmp/; those renamed stay, for the
// caller to remove.
func (s *Store) install(ts ...*tmpFile) error {
	err := s.syncData(ts)
	for _, t := range ts {
		if cerr := t.f.Close(); err == nil {
			err = cerr
		}
		t.f = nil
	}
	for i, t := range ts {
		if err == nil {
			err = s.fs.rename(t.tmp, t.final)
		}
		if err != nil {
			s.discard(ts[i:]...)
			return err
		}
	}
	return nil
}

// syncData makes the contents of ts durable: each file's fsync, or one
// shared syncfs. The fault hook sees an OpSync for each file either way.
func (s *Store) syncData(ts []*tmpFile) error {
	if s.fs.whole == nil {
		for _, t := range ts {
			if err := s.fs.sync(t.f); err != nil {
				return err
			}
		}
		return nil
	}
	for _, t := range ts {
		if err := s.fs.check(OpSync, t.tmp); err != nil {
			return err
		}
	}
	return s.group.do(s.fs.syncAll)
}

// discard closes and removes files written under tmp/; anything left there
// is removed by Open anyway.
func (s *Store) discard(ts ...*tmpFile) {
	for _, t := range ts {
		if t.f != nil {
			t.f.Close()
			t.f = nil
		}
		if err := s.fs.remove(t.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("spool: cannot remove a temporary file; the next Open removes it", "path", t.tmp, "err", err)
		}
	}
}

// syncQueue makes renames and removals in queue/ durable, sharing the sync
// with concurrent writers unless group commit is off.
func (s *Store) syncQueue() error {
	switch {
	case s.group == nil:
		return s.fs.syncDir(s.queueDir)
	case s.fs.whole != nil:
		if err := s.fs.check(OpSyncDir, s.queueDir); err != nil {
			return err
		}
		return s.group.do(s.fs.syncAll)
	}
	return s.group.do(func() error { return s.fs.syncDir(s.queueDir) })
}

func writeBytes(b []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}
}
