package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"path/filepath"
	"time"
)

// Enqueue stores m and its body. When it returns nil, both survive a
// crash: the journal record holding them (for a body over journalBodyMax,
// the state, the body being fsynced in its file first) has been written
// and fdatasynced. On an error nothing of the message is left that Open
// would load, except after an error from the journal's fdatasync, when a
// crash may leave the message whole; an error from the disk (ENOSPC, EIO)
// is wrapped, so errors.Is(err, syscall.ENOSPC) works.
//
// An empty m.ID is set to a NewID. m needs at least one recipient. A body
// up to journalBodyMax is read into memory to be journaled; a larger one is
// streamed to disk, never held in memory. Body returns those bytes on
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

	if err := s.writeNew(ctx, e, c, body); err != nil {
		s.mu.Lock()
		delete(s.entries, c.ID)
		s.mu.Unlock()
		return fmt.Errorf("spool: enqueue %s: %w", c.ID, err)
	}
	return nil
}

// writeNew stores a new message and, once it is committed, hands it to
// commitNew (entry e). A small body goes into the journal with the state,
// and nothing is written in queue/: the body file and the state file are
// left to the checkpoint that drops the record's generation (see
// journalbody.go and lazystate.go), and Body reads the body from the
// journal until then. Open writes the files from the journal after a
// crash, before it looks at queue/. A large body is streamed to its file,
// fsynced and renamed, and the queue directory fsynced, before the
// state's record is committed. On an error it removes what it wrote.
func (s *Store) writeNew(ctx context.Context, e *entry, m *Message, body io.Reader) error {
	buf, err := readSmall(ctx, body)
	if err != nil {
		return err
	}
	if len(buf) > journalBodyMax {
		return s.writeLarge(ctx, e, m, io.MultiReader(bytes.NewReader(buf), body))
	}
	info := bodyInfo{size: int64(len(buf)), crc: crc32.Checksum(buf, castagnoli)}
	state, err := encodeState(m, info)
	if err != nil {
		return err
	}
	// The round reserves the room of both files the checkpoint will
	// write, and fails before the commit when the disk has none.
	room := stateRoom(len(state)) + bodyRoom(len(buf))
	t, err := s.j.append(appendRecord(nil, recBody, m.ID, state, buf), m.ID, room)
	defer t.Done()
	if err != nil {
		return err // nothing was written but the record, which did not commit
	}
	s.commitNew(e, m, info, room, t.seg, t.off+recBodyOffset(m.ID, len(state)))
	return nil
}

// writeLarge stores a message whose body is too large for the journal:
// the body the way it always was (fsync, rename, directory fsync, shared
// by group commit), then its state record, then the state file, without
// fsync (next to a large body's own fsync, one more file is cheap).
func (s *Store) writeLarge(ctx context.Context, e *entry, m *Message, body io.Reader) error {
	var info bodyInfo
	err := s.commitFile(s.bodyPath(m.ID), func(w io.Writer) error {
		h := crc32.New(castagnoli)
		n, err := io.Copy(io.MultiWriter(w, h), ctxReader{ctx, body})
		info = bodyInfo{size: n, crc: h.Sum32()}
		return err
	})
	if err != nil {
		return err // renaming is commitFile's last step: nothing is in queue/
	}
	err = s.syncQueue()
	var state []byte
	if err == nil {
		state, err = encodeState(m, info)
	}
	if err != nil {
		s.removeDebris(m.ID)
		return err
	}
	t, err := s.j.append(appendRecord(nil, recState, m.ID, state, nil), m.ID, 0)
	defer t.Done()
	if err != nil {
		s.removeDebris(m.ID)
		return err
	}
	if err := s.fs.writeFile(s.statePath(m.ID), state); err != nil {
		s.undoCommitted(m.ID)
		return err
	}
	s.commitNew(e, m, info, 0, nil, 0)
	return nil
}

// undoCommitted takes back an Enqueue whose record was committed but
// whose files could not be put in place: a tombstone, then the files. If
// the tombstone cannot be committed either, the record stands and the
// message may come back, whole, at the next Open; that is logged.
func (s *Store) undoCommitted(id string) {
	t, err := s.j.append(appendRecord(nil, recTomb, id, nil, nil), id, 0)
	t.Done()
	if err != nil {
		s.log.Error("spool: cannot take back a failed enqueue; the message may be delivered after a restart",
			"id", id, "err", err)
	}
	s.removeDebris(id)
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
// Meta; the body and RequireTLS never change) durably, and ends the
// message's lease: the new state's journal record is committed; the state
// file is rewritten by the next checkpoint (see lazystate.go). With no recipients
// left the message, state and body, is deleted: a tombstone is committed,
// then the files are removed.
//
// Update returns ErrNotFound for a message that is not queued (deleted, or
// quarantined by Body), and ErrLeaseLost when m came from a Lease that no
// longer holds the message: it was released, already ended by an Update,
// or expired and was granted again (the newer holder's Update wins). On an
// error nothing changes, the lease included, and the caller may retry or
// Release. Once the record is committed Update returns nil: the
// journal holds the change, and no generation holding it is dropped before
// a checkpoint has written the state file.
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
	c.RequireTLS = e.msg.RequireTLS // set by Enqueue for good
	s.mu.Unlock()

	if len(c.Recipients) == 0 {
		return s.remove(e, c.ID)
	}

	state, err := encodeState(c, info)
	var t ticket
	if err == nil {
		t, err = s.j.append(appendRecord(nil, recState, c.ID, state, nil), c.ID, 0)
		defer t.Done()
	}
	if err != nil {
		s.mu.Lock()
		s.schedule(e) // unchanged, lease and all
		s.mu.Unlock()
		return fmt.Errorf("spool: update %s: %w", c.ID, err)
	}
	// Committed: the store follows the journal. The state file is left
	// to a checkpoint, which finds the entry among the unwritten ones (it
	// waits for this ticket before it looks). It needs no reserve of its
	// own: a message without a state file holds the room its Enqueue
	// reserved, and one with a file has it rewritten in place.
	s.mu.Lock()
	e.msg, e.due, e.leaseUntil, e.lease = c, due(c), time.Time{}, 0
	s.markUnwrittenLocked(e, true)
	s.schedule(e)
	s.mu.Unlock()
	return nil
}

// remove deletes a message whose last recipient is done: a tombstone is
// committed (after that the message no longer exists), then the state and
// the body files, those a checkpoint wrote, are removed, without a
// directory fsync (the next checkpoint makes the removals durable; until
// then the tombstone stands for them). A message deleted before its
// checkpoint has no file: its tombstone is all there is to write, and its
// reserve goes back at once. e is out of the heaps and e.wmu is held.
func (s *Store) remove(e *entry, id string) error {
	t, err := s.j.append(appendRecord(nil, recTomb, id, nil, nil), id, 0)
	defer t.Done()
	if err != nil {
		s.mu.Lock()
		s.schedule(e)
		s.mu.Unlock()
		return fmt.Errorf("spool: delete %s: %w", id, err)
	}
	s.mu.Lock()
	e.gone = true
	s.markUnwrittenLocked(e, false)
	// The state first, as removeDebris does; most messages are deleted
	// before a checkpoint wrote either.
	var paths []string
	if e.stateFile {
		paths = append(paths, s.statePath(id))
	}
	if e.bodyFile {
		paths = append(paths, s.bodyPath(id))
	}
	s.mu.Unlock()
	for _, p := range paths {
		if err := s.fs.remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.j.markUnclean(fmt.Errorf("delete %s: %w", id, err))
		}
	}
	// The ID is free only now: an Enqueue reusing it must not have its
	// files removed by the lines above.
	s.mu.Lock()
	delete(s.entries, id)
	s.mu.Unlock()
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

// readSmall reads body up to journalBodyMax+1 octets, into one buffer of
// the right size when body says how long it is (a bytes.Reader or
// strings.Reader, as the queue hands over), instead of growing one.
func readSmall(ctx context.Context, body io.Reader) ([]byte, error) {
	r := io.LimitReader(ctxReader{ctx, body}, journalBodyMax+1)
	l, ok := body.(interface{ Len() int })
	if !ok || l.Len() > journalBodyMax {
		return io.ReadAll(r)
	}
	// One octet more than said, so that io.ReadFull sees the end.
	buf := make([]byte, l.Len()+1)
	n, err := io.ReadFull(r, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return buf[:n], nil
	}
	if err != nil {
		return nil, err
	}
	// Longer than it said (a reader whose Len is not what remains): the
	// rest the usual way.
	rest, err := io.ReadAll(r)
	return append(buf, rest...), err
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
