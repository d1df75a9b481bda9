package spool

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Body files are written lazily, like state files (lazystate.go): an
// Enqueue of a body up to journalBodyMax commits one journal record
// holding state and body and creates no file at all. The store remembers
// where the body's bytes are in the generation it was committed to, and
// Body reads them back from there with one pread. Creating a file is what
// an Enqueue used to spend most of its CPU on, and removing it most of a
// delivery's; most messages are delivered before the checkpoint that
// drops their generation, and never get a file. A checkpoint writes the
// body file of every live message whose body is still only in the
// journal, with its state, before its syncfs and before it drops a
// generation, so a generation never goes while a message depends on it.
// See the package documentation, Commit protocol.

// bodyRoom is the space reserved for the file a body of n octets will be
// written to by a checkpoint (see reserve.go): counted like a state file,
// in whole blocks.
func bodyRoom(n int) int64 { return stateRoom(n) }

// readAt reads len(p) octets at off from the segment, for a body that
// lives in it. It reports false, and reads nothing, when the segment was
// dropped meanwhile: the body's file was written before that, so the
// caller reads the file instead. A segment that ends before off+len(p)
// (cut short behind the store's back) gives the octets there are and
// io.ErrUnexpectedEOF.
func (seg *segment) readAt(p []byte, off int64) (int, bool, error) {
	seg.rmu.RLock()
	defer seg.rmu.RUnlock()
	if seg.f == nil {
		return 0, false, nil
	}
	n, err := seg.f.ReadAt(p, off)
	if n == len(p) {
		return n, true, nil
	}
	if err == io.EOF || err == nil {
		err = io.ErrUnexpectedEOF
	}
	return n, true, err
}

// journalBody reads the body of message id, want.size octets at off in
// seg, and checks it against want as Body checks a file: a body that is
// short or whose checksum differs (damage in the journal since it was
// written) is an error wrapping ErrCorrupt. ok false: the segment was
// dropped, the body is in its file.
func journalBody(seg *segment, off int64, id string, want bodyInfo) (body []byte, ok bool, err error) {
	buf := make([]byte, want.size)
	n, ok, err := seg.readAt(buf, off)
	switch {
	case !ok:
		return nil, false, nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, true, fmt.Errorf("%w: %s: body is %d bytes in the journal, state says %d", ErrCorrupt, id, n, want.size)
	case err != nil:
		return nil, true, err
	}
	if got := crc32.Checksum(buf, castagnoli); got != want.crc {
		return nil, true, fmt.Errorf("%w: %s: body checksum %08x in the journal, state says %08x", ErrCorrupt, id, got, want.crc)
	}
	return buf, true, nil
}

// journalBytes reads what the journal holds of a body, damaged or not,
// for a checkpoint to write to its file or a quarantine to set aside: a
// segment cut short gives the octets there are (the size check of Open
// or Body then finds the damage), a read error is returned.
func journalBytes(seg *segment, off, size int64) ([]byte, bool, error) {
	buf := make([]byte, size)
	n, ok, err := seg.readAt(buf, off)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return buf[:n], ok, err
}

// writeBody writes the body file of e, whose body is only in the journal
// (at seg, off), for a checkpoint: from the journal's bytes, without
// fsync (the checkpoint's flush makes it durable, and until then the
// journal still holds it). From then on Body reads the file. e.wmu is
// held.
func (s *Store) writeBody(e *entry, id string, seg *segment, off, size int64) error {
	body, ok, err := journalBytes(seg, off, size)
	if err == nil && !ok {
		// Only a checkpoint drops a generation, and only after this.
		err = errors.New("the journal generation holding it is gone")
	}
	if err == nil {
		err = s.fs.writeFile(s.bodyPath(id), body)
	}
	if err != nil {
		return fmt.Errorf("body of %s: %w", id, err)
	}
	s.mu.Lock()
	e.jbody, e.jboff = nil, 0
	s.mu.Unlock()
	return nil
}

// bodyReader hands a body read into memory to the caller.
func bodyReader(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
