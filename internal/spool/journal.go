package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// journalSub is the journal's directory; see the package documentation.
const journalSub = "journal"

// journalBodyMax is the largest body an Enqueue writes into the journal.
// Larger bodies are streamed to their file and fsynced there (never held
// in memory), and only their state is journaled. Copying a body into the
// log costs a write of its bytes; above a few hundred KiB that write, not
// the fsync, is what an Enqueue waits for.
const journalBodyMax = 256 << 10

// defaultSegmentMax is the size past which a generation is checkpointed:
// large enough that a checkpoint (a syncfs) is rare next to the appends,
// small enough that Open replays it in well under a second.
const defaultSegmentMax = 64 << 20

// journal is the write-ahead log: appends from concurrent writers are
// group-committed (one write and one fdatasync per round, like groupSync),
// and full generations are checkpointed in the background.
type journal struct {
	dir     string // dir/journal
	spool   string // dir, for syncfs
	fs      *fsys
	log     *slog.Logger
	noGroup bool
	segMax  int64
	// noPrealloc appends without zeros ahead (see preallocate), to
	// measure what preallocation buys.
	noPrealloc bool
	// flush makes every file the store wrote durable: syncfs on Linux.
	flush func() error
	// writeStates writes the state file of every message whose latest
	// state is only in the journal, before a checkpoint's flush.
	writeStates func() error
	// res holds the room for those state files; a round takes what its
	// records need before it is written (see reserve.go).
	res *reserve

	run chan struct{} // token: held by the member writing a round, or by a rotation

	mu         sync.Mutex
	seg        *segment   // the generation appended to
	old        []*segment // rotated, not yet checkpointed, oldest first
	open       *jround    // the round accepting records, nil when none
	rotate     bool       // a failed append could not be cut off: start a new generation
	unclean    bool       // a step after a commit failed: keep every generation until Open replays it
	cpRunning  bool
	cpDone     chan struct{} // closed when the running checkpoint ends
	cpAgain    bool          // start another when the running one ends (see checkpointSoon)
	closed     bool
	lastCPErr  error
	checkpoint func() // runs one checkpoint; set by newJournal, replaced by tests
}

// segment is one generation's file.
type segment struct {
	gen  uint64
	path string
	// f stays open until the generation is dropped, also after rotation:
	// the bodies of messages not yet checkpointed are read from it (see
	// journalbody.go). rmu is held for reading by such a read and for
	// writing by the close in drop, so a checkpoint never closes f under
	// a reader; a reader that finds f nil knows the body is in its file.
	rmu  sync.RWMutex
	f    *os.File
	size int64 // bytes of whole, committed rounds
	// alloc is the file's size when it was preallocated past size (zeros
	// after the last record); noPrealloc stops trying after a failure.
	alloc      int64
	noPrealloc bool
	// pending counts the writers whose record is in this segment and who
	// have not finished the file steps that follow their commit (renames,
	// unlinks). A checkpoint waits for them: a generation may be dropped
	// only when every change its records describe has reached the files.
	pending sync.WaitGroup
	// ids are the messages whose files the records changed, for the
	// checkpoint where there is no syncfs.
	ids []string
}

// jround is one group commit: the records of every member, written and
// synced together, and the round's own result.
type jround struct {
	buf   []byte
	ids   []string
	n     int
	room  int64 // reserve the round's records need (see reserve.go)
	done  chan struct{}
	err   error
	seg   *segment // where the round was written, set by its runner
	start int64    // the offset of buf in seg, set by its runner
}

// ticket is a writer's place in a committed round. Done must be called
// after the file steps that follow the commit, whatever its outcome.
// off is where the writer's record starts in seg, once committed.
type ticket struct {
	seg *segment
	off int64
}

// Done ends the writer's post-commit file steps.
func (t ticket) Done() {
	if t.seg != nil {
		t.seg.pending.Done()
	}
}

func segName(gen uint64) string { return fmt.Sprintf("%016x.log", gen) }

// parseSegName returns the generation of a segment file name.
func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, ".log")
	if !ok || len(hex) != 16 {
		return 0, false
	}
	gen, err := strconv.ParseUint(hex, 16, 64)
	return gen, err == nil
}

func (s *Store) newJournal(dir string, noGroup bool) *journal {
	j := &journal{
		dir:     filepath.Join(dir, journalSub),
		spool:   dir,
		fs:      &s.fs,
		log:     s.log,
		noGroup: noGroup,
		segMax:  defaultSegmentMax,
		run:     make(chan struct{}, 1),
	}
	j.flush = func() error { return s.flushAll(j) }
	j.writeStates = s.writeStates
	j.res = &s.res
	j.checkpoint = func() { j.runCheckpoint() }
	return j
}

// start creates generation gen, the first one appended to.
func (j *journal) start(gen uint64) error {
	seg, err := j.create(gen)
	if err != nil {
		return err
	}
	j.seg = seg
	return nil
}

// create makes a new, empty generation durable before anything is
// appended to it: an fdatasync of a record does not make the file's name
// durable, the directory fsync does.
func (j *journal) create(gen uint64) (*segment, error) {
	path := filepath.Join(j.dir, segName(gen))
	if err := j.fs.check(OpRotate, path); err != nil {
		return nil, err
	}
	f, err := newSegmentFile(path)
	if errors.Is(err, syscall.ENOSPC) && j.res.trim() {
		f, err = newSegmentFile(path) // see write
	}
	if err != nil {
		return nil, err
	}
	seg := &segment{gen: gen, path: path, f: f}
	err = j.fs.datasync(f)
	if err == nil {
		err = j.fs.syncDir(j.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	seg.size = int64(len(segmentMagic))
	return seg, nil
}

// newSegmentFile creates a generation's file with its header.
func newSegmentFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(segmentMagic); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// append commits one record: it returns after a round holding it was
// written and fdatasynced, with that round's error. room is the reserve
// the round must take first for files left to a checkpoint (see
// reserve.go). The caller must call Done on the ticket when its
// post-commit file steps are over, also when append fails.
func (j *journal) append(rec []byte, id string, room int64) (ticket, error) {
	return j.join(rec, id, room).wait()
}

// joined is a record handed to the journal whose commit has not been
// waited for.
type joined struct {
	j    *journal
	r    *jround // nil: not joined (no group commit, or closed)
	off  int     // where rec starts in r.buf
	rec  []byte
	id   string
	room int64
}

// join hands rec to the round being formed and returns at once, so the
// caller can do other work (write a file) while the round fills and runs;
// wait then commits it. Without group commit the record is only held.
// room is the reserve its round must take first for a state file left to
// a checkpoint (see reserve.go); a round that cannot have it fails.
func (j *journal) join(rec []byte, id string, room int64) joined {
	if j.noGroup {
		return joined{j: j, rec: rec, id: id, room: room}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return joined{j: j}
	}
	r := j.open
	if r == nil {
		r = &jround{done: make(chan struct{})}
		j.open = r
	}
	off := len(r.buf)
	r.buf = append(r.buf, rec...)
	r.ids = append(r.ids, id)
	r.n++
	r.room += room
	return joined{j: j, r: r, off: off}
}

// wait returns when the record's round has been written and fdatasynced,
// running the round itself when no other member does.
func (p joined) wait() (ticket, error) {
	j, r := p.j, p.r
	if j.noGroup {
		j.run <- struct{}{}
		j.mu.Lock()
		closed := j.closed
		j.mu.Unlock()
		if closed {
			<-j.run
			return ticket{}, ErrClosed
		}
		r = &jround{done: make(chan struct{}), buf: p.rec, ids: []string{p.id}, n: 1, room: p.room}
		p.r = r
	} else {
		if r == nil {
			return ticket{}, ErrClosed
		}
		select {
		case <-r.done:
			return p.ticket(), r.err
		case j.run <- struct{}{}:
		}
		// Holding the token: a member that held it just before may have
		// run this round already.
		select {
		case <-r.done:
			<-j.run
			return p.ticket(), r.err
		default:
		}
		j.mu.Lock()
		if j.open == r {
			j.open = nil // from here on nobody joins r
		}
		j.mu.Unlock()
	}
	j.write(r)
	close(r.done)
	<-j.run
	return p.ticket(), r.err
}

// ticket is the member's ticket once its round has run.
func (p joined) ticket() ticket {
	return ticket{seg: p.r.seg, off: p.r.start + int64(p.off)}
}

// write runs round r; the caller holds the token. A round that fails is
// cut off the segment again, so that the next round follows the last good
// one and Open never replays an operation that reported an error.
func (j *journal) write(r *jround) {
	j.mu.Lock()
	if j.rotate {
		if err := j.rotateLocked(); err != nil {
			j.mu.Unlock()
			r.err = fmt.Errorf("journal: %w", err)
			return
		}
	}
	seg := j.seg
	seg.pending.Add(r.n)
	r.seg = seg
	j.mu.Unlock()

	// The room for the states the records leave to a checkpoint first: a
	// round that cannot have it is not written at all.
	if err := j.res.take(r.room); err != nil {
		r.err = fmt.Errorf("journal: %w", err)
		return
	}
	start := seg.size
	err := j.fs.check(OpAppend, seg.path)
	if err == nil {
		j.preallocate(seg, start+int64(len(r.buf)))
		_, err = seg.f.WriteAt(r.buf, start)
		if errors.Is(err, syscall.ENOSPC) && j.res.trim() {
			// The disk is full, and the reserve held blocks no file
			// needs any more (messages deleted before their checkpoint
			// gave their share back): the file system has them now.
			_, err = seg.f.WriteAt(r.buf, start)
		}
	}
	if err == nil {
		err = j.fs.datasync(seg.f)
	}
	if err != nil {
		r.err = fmt.Errorf("journal: %w", err)
		j.res.give(r.room)
		seg.alloc = start // the zeros after the round go too
		if terr := j.truncate(seg, start); terr != nil {
			j.log.Error("spool: cannot cut a failed append off the journal; what it held may be replayed at the next Open",
				"path", seg.path, "err", terr)
			j.mu.Lock()
			j.rotate = true
			j.mu.Unlock()
		}
		return
	}
	j.mu.Lock()
	r.start = start
	seg.size = start + int64(len(r.buf))
	seg.ids = append(seg.ids, r.ids...)
	full := seg.size >= j.segMax && !j.cpRunning && !j.closed
	if full {
		j.cpRunning = true
		j.cpDone = make(chan struct{})
	}
	j.mu.Unlock()
	if full {
		go j.checkpoint()
	}
}

// preallocChunk is at most how far ahead of the appends a segment is
// filled with zeros. Appends then overwrite blocks that are already allocated
// and within the file's size, so their fdatasync writes the data and
// flushes the disk's cache, without a file-system journal commit (which
// would also carry every file the writers created and renamed meanwhile).
// Open reads zeros after the last record as the end of the segment.
const preallocChunk = 4 << 20

// preallocate extends seg with zeros when a round ending at end would not
// fit in what is allocated. It never fails the round: without room for
// the zeros (a full disk) the segment is appended to without them.
func (j *journal) preallocate(seg *segment, end int64) {
	if end <= seg.alloc || seg.noPrealloc || j.noPrealloc || j.fs.noSync {
		return
	}
	from := max(seg.alloc, seg.size)
	// Doubling from 64 KiB: a store that writes little (a test, a
	// personal server) does not write megabytes of zeros.
	to := max(from+min(max(from, 64<<10), preallocChunk), end)
	zeros := make([]byte, to-from)
	if _, err := seg.f.WriteAt(zeros, from); err != nil {
		seg.noPrealloc = true
		if terr := seg.f.Truncate(from); terr != nil {
			j.log.Warn("spool: cannot cut back a failed preallocation of the journal", "path", seg.path, "err", terr)
		}
		return
	}
	seg.alloc = to
}

// truncate cuts seg back to size and makes that durable.
func (j *journal) truncate(seg *segment, size int64) error {
	if err := j.fs.check(OpTruncate, seg.path); err != nil {
		return err
	}
	if err := seg.f.Truncate(size); err != nil {
		return err
	}
	return j.fs.datasync(seg.f)
}

// rotateLocked starts the next generation. j.mu and the token are held.
func (j *journal) rotateLocked() error {
	next, err := j.create(j.seg.gen + 1)
	if err != nil {
		return err
	}
	// Nothing writes to the old generation any more, but its descriptor
	// stays open until the generation is dropped: the bodies of messages
	// not yet checkpointed are read from it.
	j.old = append(j.old, j.seg)
	j.seg = next
	j.rotate = false
	return nil
}
