package spool

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"
	"time"
)

// Lease hands out up to max messages that have at least one recipient due
// (NextAttempt <= now) and are not leased, earliest NextAttempt first, and
// marks them leased until now+lease. A leased message is not returned again
// until Update or Release ends the lease or a Lease call's now reaches its
// end. Leases live in memory: the store serves one process, and after a
// restart nothing is leased.
//
// The messages are copies the caller owns, each with its Lease set. Passing
// one to Update after its lease ended (Release, Update) or expired and
// another Lease took the message fails with ErrLeaseLost.
func (s *Store) Lease(ctx context.Context, now time.Time, max int, lease time.Duration) ([]*Message, error) {
	return s.LeaseDue(ctx, now, now, max, lease)
}

// LeaseDue is Lease with a separate cutoff for what is due: messages with a
// recipient due at dueBy (a flush passes a time far ahead), while leases
// still end by now. A message under a lease that has not ended at now is
// never returned, however early dueBy makes it due.
func (s *Store) LeaseDue(ctx context.Context, now, dueBy time.Time, max int, lease time.Duration) ([]*Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if lease <= 0 {
		return nil, fmt.Errorf("spool: lease duration %v is not positive", lease)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	// Expired leases first: their messages compete by due time again.
	for e := s.leased.peek(); e != nil && !e.leaseUntil.After(now); e = s.leased.peek() {
		heap.Pop(&s.leased)
		e.leaseUntil = time.Time{}
		heap.Push(&s.due, e)
	}
	var out []*Message
	for e := s.due.peek(); e != nil && len(out) < max && !e.due.After(dueBy); e = s.due.peek() {
		heap.Pop(&s.due)
		s.leaseSeq++
		e.lease = s.leaseSeq
		e.leaseUntil = now.Add(lease)
		heap.Push(&s.leased, e)
		c := clone(e.msg)
		c.Lease = e.lease
		out = append(out, c)
	}
	return out, nil
}

// Release ends the lease on id without changing anything, for an attempt
// that did not happen (shutdown, no worker free). Unknown or unleased IDs
// are ignored.
func (s *Store) Release(id string) { s.ReleaseLease(id, 0) }

// ReleaseLease is Release by the holder of one lease: it does nothing when
// lease (non-zero) is not the message's current lease, so a holder whose
// lease was taken over cannot end the new holder's. It reports whether it
// ended a lease.
func (s *Store) ReleaseLease(id string, lease uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[id]
	if e == nil || e.msg == nil || e.leaseUntil.IsZero() || lease != 0 && lease != e.lease {
		return false
	}
	scheduled := e.heap != nil // not while Update rewrites it
	s.unschedule(e)
	e.leaseUntil, e.lease = time.Time{}, 0
	if scheduled {
		s.schedule(e)
	}
	return true
}

// Quarantine takes message id out of the queue for good, moving its files
// to corrupt/ for an operator to inspect, and logs reason. With a non-zero
// lease it acts only for the current holder of that lease and otherwise
// fails with ErrLeaseLost; an unknown id gives ErrNotFound.
func (s *Store) Quarantine(id string, lease uint64, reason error) error {
	s.mu.Lock()
	if err := s.beginLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	defer s.ops.Done()
	e := s.entries[id]
	s.mu.Unlock()
	if e == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return s.quarantineLeased(e, id, lease, reason)
}

// List returns a copy of every queued message, leased or not, oldest
// Created first.
func (s *Store) List(ctx context.Context) ([]*Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	out := make([]*Message, 0, len(s.entries))
	for _, e := range s.entries {
		if e.msg != nil {
			out = append(out, clone(e.msg))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *Message) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Body opens the canonical body of message id for reading, positioned at
// its start; the caller closes it. The body's size and checksum are checked
// against the state first (a read of the whole file, cheap next to sending
// it): a damaged body is not sent but moved with its state to corrupt/,
// the message leaves the queue and the error wraps ErrCorrupt. An unknown
// id gives ErrNotFound.
//
// A body of at most journalBodyMax (the bodies the journal holds, which
// are most mail) is read whole in one pass and handed back from memory:
// from the journal with one pread while no checkpoint has written its
// file yet (journalbody.go), else from its file, already closed. Checking
// it and then reading it again through the file would cost a second
// pass, a seek and the file held open while the message is on the wire.
// A larger one is checked through a pooled buffer and returned as the
// open file, rewound.
func (s *Store) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if err := s.beginLocked(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	defer s.ops.Done()
	e := s.entries[id]
	if e == nil || e.msg == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	want, seg, off := e.body, e.jbody, e.jboff
	s.mu.Unlock()

	if seg != nil {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, ok, err := journalBody(seg, off, id, want)
		switch {
		case ok && err == nil:
			return bodyReader(b), nil
		case ok && !errors.Is(err, ErrCorrupt): // a read error: the body may be fine
			return nil, fmt.Errorf("spool: body of %s: %w", id, err)
		case ok:
			s.quarantineEntry(e, id, err)
			// The generation is damaged: it goes now, once the checkpoint
			// has written every file that depends on it, rather than stay
			// on a failing medium until a crash makes Open's replay skip
			// the damage (replay_damage.go).
			s.j.checkpointSoon()
			return nil, err
		}
		// The generation was dropped meanwhile, after the checkpoint wrote
		// the body's file.
	}
	f, err := os.Open(s.bodyPath(id))
	switch {
	case err == nil:
		var rc io.ReadCloser
		if want.size <= journalBodyMax {
			rc, err = readSmallBody(ctx, f, id, want)
			f.Close()
		} else if err = checkBody(ctx, f, id, want); err == nil {
			rc = f
		} else {
			f.Close()
		}
		if err == nil {
			return rc, nil
		}
		if !errors.Is(err, ErrCorrupt) { // a read error or ctx: the body may be fine
			return nil, fmt.Errorf("spool: body of %s: %w", id, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("spool: body of %s: %w", id, err)
	case s.isGone(e): // deleted by Update meanwhile
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	default:
		err = fmt.Errorf("%w: %s: body file missing", ErrCorrupt, id)
	}
	s.quarantineEntry(e, id, err)
	return nil, err
}

// readSmallBody reads f, which the state says holds want.size octets,
// whole into memory and checks it like checkBody: one octet more than the
// state says is read for, so that a longer file is caught too.
func readSmallBody(ctx context.Context, f *os.File, id string, want bodyInfo) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	buf := make([]byte, want.size+1)
	n, err := io.ReadFull(f, buf)
	switch {
	case err == nil: // the file goes on past what the state says
		size := int64(n)
		if fi, serr := f.Stat(); serr == nil {
			size = fi.Size()
		}
		return nil, fmt.Errorf("%w: %s: body is %d bytes, state says %d", ErrCorrupt, id, size, want.size)
	case err != io.EOF && err != io.ErrUnexpectedEOF:
		return nil, err
	case int64(n) != want.size:
		return nil, fmt.Errorf("%w: %s: body is %d bytes, state says %d", ErrCorrupt, id, n, want.size)
	}
	if got := crc32.Checksum(buf[:n], castagnoli); got != want.crc {
		return nil, fmt.Errorf("%w: %s: body checksum %08x, state says %08x", ErrCorrupt, id, got, want.crc)
	}
	return bodyReader(buf[:n]), nil
}

// checkBuf holds the buffers checkBody reads large bodies through, so that
// a queue draining large messages does not allocate one per message.
var checkBuf = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// checkBody reads f through, compares size and CRC-32C with want (a
// mismatch wraps ErrCorrupt), and rewinds it.
func checkBody(ctx context.Context, f *os.File, id string, want bodyInfo) error {
	h := crc32.New(castagnoli)
	bp := checkBuf.Get().(*[]byte)
	n, err := io.CopyBuffer(h, ctxReader{ctx, f}, *bp)
	checkBuf.Put(bp)
	if err != nil {
		return err
	}
	if n != want.size {
		return fmt.Errorf("%w: %s: body is %d bytes, state says %d", ErrCorrupt, id, n, want.size)
	}
	if got := h.Sum32(); got != want.crc {
		return fmt.Errorf("%w: %s: body checksum %08x, state says %08x", ErrCorrupt, id, got, want.crc)
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

func (s *Store) isGone(e *entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return e.gone
}

// quarantineEntry takes a loaded message out of the queue and moves its
// files to corrupt/.
func (s *Store) quarantineEntry(e *entry, id string, reason error) {
	s.quarantineLeased(e, id, 0, reason)
}

// quarantineLeased is quarantineEntry for the holder of lease (0: anyone).
func (s *Store) quarantineLeased(e *entry, id string, lease uint64, reason error) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	// A body only in the journal is read first, to go aside: e.wmu keeps
	// a checkpoint from writing it meanwhile, and so from dropping its
	// generation.
	s.mu.Lock()
	seg, off, size := e.jbody, e.jboff, e.body.size
	s.mu.Unlock()
	var jbody []byte
	if seg != nil {
		b, ok, err := journalBytes(seg, off, size)
		if err != nil {
			s.log.Error("spool: cannot read the body of a corrupt entry from the journal", "id", id, "err", err)
		}
		if ok {
			jbody = b
		}
	}
	s.mu.Lock()
	switch {
	case e.gone || e.msg == nil:
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	case lease != 0 && lease != e.lease:
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrLeaseLost, id)
	}
	e.gone = true
	unwritten, stateFile, bodyFile, m, info := e.unwritten, e.stateFile, e.bodyFile, e.msg, e.body
	s.markUnwrittenLocked(e, false)
	s.unschedule(e)
	delete(s.entries, id)
	s.mu.Unlock()
	var state []byte
	if unwritten {
		// Never written, or older on disk: the state goes aside from
		// memory. If it cannot even be encoded, what is on disk goes.
		state, _ = encodeState(m, info)
	}
	if state != nil {
		s.quarantineUnwritten(id, state, stateFile, jbody, bodyFile, reason)
	} else {
		s.quarantine(id, reason)
	}
	// The files are in corrupt/; a tombstone keeps the journal from
	// bringing them back at the next Open. Without it (the journal fails
	// too) the message may come back, and be checked again.
	t, err := s.j.append(appendRecord(nil, recTomb, id, nil, nil), id, 0)
	t.Done()
	if err != nil {
		s.log.Error("spool: cannot record a quarantine in the journal; the message may come back at the next Open", "id", id, "err", err)
	}
	s.syncAfterRecovery()
	return nil
}
