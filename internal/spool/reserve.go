package spool

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// The state and body files a checkpoint writes need disk space that the
// messages' commits did not take (see lazystate.go and journalbody.go). On
// a full disk a checkpoint that cannot write them keeps the journal, which
// holds the space that would have been freed: the spool could no longer
// shrink, nor open again. So the space is reserved when a record whose
// files are left unwritten is committed, in one file, dir/reserve,
// allocated ahead (fallocate(2)) by the round that commits the record: an
// Enqueue that cannot get the room of its state and body files fails with
// ENOSPC before its commit, like one whose record does not fit. Deleting a
// message before its checkpoint gives its share back at once, for the
// next Enqueue to use. A checkpoint frees the reserve first, then writes
// the files into the room it leaves.

// reserveName is the reserve file in the spool directory.
const reserveName = "reserve"

// stateBlock is what one state or body file is counted as taking: its
// size rounded up to a block of 4 KiB, the block (or page) size of the
// usual file systems.
const stateBlock = 4096

// reserveSlack is how far ahead of the need the reserve grows, so that
// most rounds find room without a call.
const reserveSlack = 64 * stateBlock

// stateRoom is the space reserved for a state file of n bytes.
func stateRoom(n int) int64 { return (int64(n) + stateBlock - 1) / stateBlock * stateBlock }

// reserve is the space held for unwritten state and body files.
type reserve struct {
	fs   *fsys
	path string

	mu   sync.Mutex
	f    *os.File // nil: no reservation (closed, or the system cannot allocate)
	need int64    // bytes the unwritten files take
	have int64    // bytes allocated to the file
}

// open opens the reserve file and empties it: at Open every state and
// body is on disk, or replay is about to write it into the room this
// frees.
func (r *reserve) open(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return err
	}
	r.path, r.f = path, f
	return nil
}

// take reserves n more bytes. It fails (wrapping ENOSPC on a full disk)
// when the file system cannot allocate them; nothing is then reserved.
func (r *reserve) take(n int64) error {
	if n <= 0 {
		return nil
	}
	// The hook sees every reservation, not only those that allocate, so a
	// test can fail any of them.
	if err := r.fs.check(OpReserve, r.path); err != nil {
		return fmt.Errorf("reserve room for the checkpoint's files: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.need += n
	if r.f == nil || r.need <= r.have {
		return nil
	}
	// Ahead of the need when there is room, exactly the need when there
	// is not: a nearly full disk still takes what fits.
	err := allocate(r.f, r.need+reserveSlack)
	if err == nil {
		r.have = r.need + reserveSlack
	} else if err = allocate(r.f, r.need); err == nil {
		r.have = r.need
	}
	if errors.Is(err, errNoAllocate) {
		// The file system cannot reserve: go on without, as before
		// there was a reserve.
		r.f.Close()
		r.f = nil
		return nil
	}
	if err != nil {
		r.need -= n
		return fmt.Errorf("reserve room for the checkpoint's files: %w", err)
	}
	return nil
}

// give returns n bytes: a message's files were written, or it is gone. The
// file keeps its size until the next checkpoint frees it, or a write finds
// the disk full (trim); the rounds after use the room without allocating
// it again.
func (r *reserve) give(n int64) {
	if n <= 0 {
		return
	}
	r.mu.Lock()
	r.need -= n
	r.mu.Unlock()
}

// trim gives back to the file system the blocks of the file beyond what
// the unwritten files need: the shares of messages deleted since the last
// checkpoint, which give only returns to the reserve. It reports whether
// it freed any, for a write that found the disk full to try again.
func (r *reserve) trim() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil || r.have <= r.need {
		return false
	}
	if err := r.f.Truncate(r.need); err != nil {
		return false
	}
	r.have = r.need
	return true
}

// free empties the file, before a checkpoint writes the files into the
// room. The rounds that commit meanwhile allocate again what they need.
func (r *reserve) free() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil || r.have == 0 {
		return
	}
	if err := r.f.Truncate(0); err == nil {
		r.have = 0
	}
}

// close closes the file, which stays empty (or as large as its last
// checkpoint left it; the next Open empties it).
func (r *reserve) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// errNoAllocate is allocate's answer where the file system cannot reserve
// space ahead.
var errNoAllocate = errors.New("no preallocation")

// noAllocate reports whether err says the system cannot preallocate.
func noAllocate(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS)
}
