package spool

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"path/filepath"
	"time"
)

// Enqueue stores m and its body. When it returns nil, both are on disk and
// survive a crash: body and state written, fsynced and renamed into place,
// and the queue directory fsynced. On an error nothing of the message is
// left that Open would load; an error from the disk (ENOSPC, EIO) is
// wrapped, so errors.Is(err, syscall.ENOSPC) works.
//
// An empty m.ID is set to a NewID. m needs at least one recipient. The body
// is streamed to disk, never held in memory, and is what Body returns on
// every retry. The message can be leased as soon as Enqueue returns.
func (s *Store) Enqueue(ctx context.Context, m *Message, body io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.ID == "" {
		m.ID = NewID(time.Now())
	}
	if err := checkMessage(m); err != nil {
		return err
	}
	if len(m.Recipients) == 0 {
		return fmt.Errorf("spool: message %s has no recipients", m.ID)
	}
	if body == nil {
		return fmt.Errorf("spool: message %s has no body", m.ID)
	}
	c := clone(m)
	c.Lease = 0

	// Reserve the ID: a concurrent Enqueue of the same ID must not share
	// the temporary files, and Lease, List and Body ignore an entry
	// without msg.
	e := &entry{idx: -1}
	s.mu.Lock()
	if err := s.beginLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	defer s.ops.Done()
	if _, ok := s.entries[c.ID]; ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrExists, c.ID)
	}
	s.entries[c.ID] = e
	s.mu.Unlock()

	info, err := s.writeNew(ctx, c, body)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.entries, c.ID)
		return fmt.Errorf("spool: enqueue %s: %w", c.ID, err)
	}
	e.msg, e.body, e.due = c, info, due(c)
	s.schedule(e)
	return nil
}

// writeNew writes body and state in commit order and fsyncs the queue
// directory; on an error it removes what it wrote.
func (s *Store) writeNew(ctx context.Context, m *Message, body io.Reader) (bodyInfo, error) {
	var info bodyInfo
	err := s.commitFile(s.bodyPath(m.ID), func(w io.Writer) error {
		h := crc32.New(castagnoli)
		n, err := io.Copy(io.MultiWriter(w, h), ctxReader{ctx, body})
		info = bodyInfo{size: n, crc: h.Sum32()}
		return err
	})
	if err != nil {
		return info, err // renaming is commitFile's last step: nothing is in queue/
	}
	state, err := encodeState(m, info)
	if err == nil {
		err = s.commitFile(s.statePath(m.ID), writeBytes(state))
	}
	if err == nil {
		err = s.syncQueue()
	}
	if err != nil {
		s.removeDebris(m.ID)
	}
	return info, err
}

// removeDebris undoes a failed Enqueue: the state first, because a body
// without a state is discarded by Open but a state is a commit record. A
// failure to remove the state is logged: if the state had been renamed
// into place, the message will come back at the next Open, complete.
func (s *Store) removeDebris(id string) {
	if err := s.fs.remove(s.statePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("spool: cannot remove the state of a failed enqueue; the message may be delivered after a restart",
			"id", id, "err", err)
	}
	if err := s.fs.remove(s.bodyPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("spool: cannot remove the body of a failed enqueue; the next Open removes it", "id", id, "err", err)
	}
	// Make the removals durable. If this fails as well, a crash can bring
	// the message back, but only whole: its state was the last thing
	// written and is the first thing removed.
	s.fs.syncDir(s.queueDir)
}

// Update replaces the stored state of m.ID with m (sender, recipients,
// Meta; the body never changes) durably, the way Enqueue writes it, and
// ends the message's lease. With no recipients left the message, state and
// body, is deleted.
//
// Update returns ErrNotFound for a message that is not queued (deleted, or
// quarantined by Body), and ErrLeaseLost when m came from a Lease that no
// longer holds the message: it was released, already ended by an Update,
// or expired and was granted again (the newer holder's Update wins). On an error before the new state is in place
// nothing changes, the lease included, and the caller may retry or
// Release. An error from the final directory fsync means the change is
// made (the store and List show it) but may not survive a crash.
func (s *Store) Update(ctx context.Context, m *Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkMessage(m); err != nil {
		return err
	}
	c := clone(m)
	c.Lease = 0

	s.mu.Lock()
	if err := s.beginLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	defer s.ops.Done()
	e := s.entries[c.ID]
	s.mu.Unlock()
	if e == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, c.ID)
	}

	e.wmu.Lock()
	defer e.wmu.Unlock()
	s.mu.Lock()
	switch {
	case e.msg == nil || e.gone:
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, c.ID)
	case m.Lease != 0 && m.Lease != e.lease:
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrLeaseLost, c.ID)
	}
	// Out of the heaps while its files change, so no lease is granted on a
	// state that is being replaced.
	s.unschedule(e)
	info := e.body
	s.mu.Unlock()

	if len(c.Recipients) == 0 {
		return s.remove(e, c.ID)
	}

	state, err := encodeState(c, info)
	if err == nil {
		err = s.commitFile(s.statePath(c.ID), writeBytes(state))
	}
	if err != nil {
		s.mu.Lock()
		s.schedule(e) // unchanged, lease and all
		s.mu.Unlock()
		return fmt.Errorf("spool: update %s: %w", c.ID, err)
	}
	// The new state is in place: the store follows the file system.
	s.mu.Lock()
	e.msg, e.due, e.leaseUntil, e.lease = c, due(c), time.Time{}, 0
	s.schedule(e)
	s.mu.Unlock()
	if err := s.syncQueue(); err != nil {
		return fmt.Errorf("spool: update %s: not durable: %w", c.ID, err)
	}
	return nil
}

// remove deletes a message whose last recipient is done: the state first
// (after that the message no longer exists), then the body. e is out of
// the heaps and e.wmu is held.
func (s *Store) remove(e *entry, id string) error {
	if err := s.fs.remove(s.statePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.mu.Lock()
		s.schedule(e)
		s.mu.Unlock()
		return fmt.Errorf("spool: delete %s: %w", id, err)
	}
	s.mu.Lock()
	e.gone = true
	delete(s.entries, id)
	s.mu.Unlock()
	if err := s.fs.remove(s.bodyPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("spool: cannot remove the body of a delivered message; the next Open removes it", "id", id, "err", err)
	}
	if err := s.syncQueue(); err != nil {
		return fmt.Errorf("spool: delete %s: not durable, the message may come back after a crash: %w", id, err)
	}
	return nil
}

// commitFile writes a file under tmp/ with write, fsyncs it and renames it
// to final (in queue/). The rename is durable only after syncQueue. On an
// error the temporary file is removed; anything left in tmp/ is removed by
// Open anyway.
func (s *Store) commitFile(final string, write func(io.Writer) error) error {
	tmp := filepath.Join(s.tmpDir, filepath.Base(final)+".tmp")
	f, err := s.fs.create(tmp)
	if err != nil {
		return err
	}
	err = write(faultWriter{&s.fs, f})
	if err == nil {
		err = s.fs.sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.fs.rename(tmp, final)
	}
	if err != nil {
		if rerr := s.fs.remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			s.log.Warn("spool: cannot remove a temporary file; the next Open removes it", "path", tmp, "err", rerr)
		}
	}
	return err
}

// syncQueue makes renames and removals in queue/ durable, sharing the fsync
// with concurrent writers unless group commit is off.
func (s *Store) syncQueue() error {
	if s.group == nil {
		return s.fs.syncDir(s.queueDir)
	}
	return s.group.do(func() error { return s.fs.syncDir(s.queueDir) })
}

func writeBytes(b []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}
}

// ctxReader stops a long body copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
