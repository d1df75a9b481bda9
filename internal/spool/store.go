package spool

import (
	"container/heap"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Options configures a Store. The zero value is the safe default: fsync on,
// group commit on, no logging.
type Options struct {
	// NoSync skips every fsync, fdatasync and syncfs. The journal is still
	// written and replayed, so a killed process loses nothing, but a crash
	// of the machine or a power loss can lose or truncate messages that
	// Enqueue reported as stored. For tests and benchmarks only.
	NoSync bool
	// NoGroupCommit makes every writer append and fdatasync its own
	// journal record (and fsync the queue directory itself for a large
	// body) instead of sharing the commit with concurrent writers. It
	// exists to measure what group commit buys (see BenchmarkEnqueue8).
	NoGroupCommit bool
	// Logger receives quarantines (Warn), cleanup failures (Error) and
	// recovery summaries (Info). nil discards.
	Logger *slog.Logger
	// Fault, when set, is called before every file-system step that
	// changes the store (see Op), journal steps included, with the path
	// concerned; a non-nil error fails that step as if the operating
	// system had returned it, and the step is not performed. It exists so
	// tests can fail each step of a write in turn, or every step after
	// one, which is what a crash looks like from the disk. nil: no faults.
	Fault func(op Op, path string) error

	// segmentMax overrides defaultSegmentMax, for tests of checkpoints.
	segmentMax int64
	// noPrealloc turns the journal's preallocation off, to measure it.
	noPrealloc bool
}

// Store is a spool directory opened by one process. Its methods are safe for
// concurrent use.
type Store struct {
	queueDir, tmpDir, corruptDir string

	fs    fsys
	log   *slog.Logger
	group *groupSync // nil without group commit
	j     *journal
	lock  *os.File // the open lock file, whose descriptor holds the flock
	res   reserve  // room for the state files left to checkpoints

	// ops counts the calls that touch files, so Close can wait for them.
	ops sync.WaitGroup

	// mu guards everything below and the in-memory fields of every entry
	// (not entry.wmu). It is never held across file-system calls, so a
	// slow fsync never blocks Lease or List.
	mu       sync.Mutex
	closed   bool
	entries  map[string]*entry
	due      entryHeap // committed, not leased: by due time
	leased   entryHeap // leased: by end of lease
	leaseSeq uint64
	opened   []Quarantined // quarantined by Open, until TakeQuarantined
	// unwritten holds the live entries whose latest state is committed in
	// the journal but not in a state file yet; a checkpoint writes them
	// (see writeStates) before it drops a generation.
	unwritten map[*entry]struct{}
	// replayLive holds, during Open, the messages the journal says are
	// live, so the scan never removes their bodies as orphans.
	replayLive map[string]bool

	gc stateGC // removes expired state entries (stategc.go)
}

// Quarantined is an entry Open moved to corrupt/.
type Quarantined struct {
	ID     string
	Reason error
}

// TakeQuarantined returns the entries Open quarantined, once: the queue
// reports them to its user (Body's quarantines are reported by its caller,
// which gets ErrCorrupt).
func (s *Store) TakeQuarantined() []Quarantined {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.opened
	s.opened = nil
	return q
}

// entry is the store's view of one message.
type entry struct {
	// wmu serialises writes of this message's files (Update, deletion,
	// quarantine), which run without s.mu. Taken before s.mu, never after.
	wmu sync.Mutex

	msg        *Message  // committed state (the store's own copy); nil while Enqueue writes it
	body       bodyInfo  // the body's size and checksum, from the state
	due        time.Time // due(msg)
	leaseUntil time.Time // end of the current lease; zero when not leased
	lease      uint64    // the last lease granted, to recognise stale Updates
	gone       bool      // deleted or quarantined
	// unwritten: the latest state is only in the journal and in msg; the
	// state file is missing or older (see Store.unwritten).
	unwritten bool
	// stateFile: a state file exists in queue/ (maybe an older state), so
	// a delete or quarantine has one to remove.
	stateFile bool
	// jbody, while not nil, is the journal generation holding the body,
	// at jboff: the body is only in its Enqueue's record, and Body reads
	// it from there (journalbody.go). nil once a checkpoint wrote the
	// body file, and for a large body, which always has one. An entry
	// with jbody is among the unwritten ones, so the checkpoint that
	// drops the generation writes the file first.
	jbody *segment
	jboff int64
	// bodyFile: a body file exists in queue/ (or may, half-written by a
	// failed checkpoint), so a delete or quarantine has one to remove.
	bodyFile bool
	// room is the reserve held for the unwritten state, and for the body
	// file while jbody is set (see reserve.go).
	room int64

	heap *entryHeap // the heap holding it, nil when in none
	idx  int        // index in heap
}

// Subdirectories of the spool directory; see the package documentation.
const (
	queueSub   = "queue"
	tmpSub     = "tmp"
	corruptSub = "corrupt"
	lockName   = "lock"

	extBody  = ".eml"
	extState = ".json"
)

// Open opens the spool in dir, creating dir (mode 0700) and its
// subdirectories as needed, and loads every message in it. Damaged entries
// are moved to dir/corrupt/ and logged, unfinished writes and bodies
// that neither a state file nor the journal names are removed; none of
// these makes Open fail. Open fails
// when the directories cannot be created or read, or with ErrLocked when
// another Store has dir open.
func Open(dir string, opts Options) (*Store, error) {
	s := &Store{
		queueDir:   filepath.Join(dir, queueSub),
		tmpDir:     filepath.Join(dir, tmpSub),
		corruptDir: filepath.Join(dir, corruptSub),
		fs:         fsys{noSync: opts.NoSync, fault: opts.Fault},
		log:        opts.Logger,
		entries:    make(map[string]*entry),
		unwritten:  make(map[*entry]struct{}),
		leased:     entryHeap{byLease: true},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if !opts.NoGroupCommit {
		s.group = newGroupSync()
	}
	s.j = s.newJournal(dir, opts.NoGroupCommit)
	if opts.segmentMax > 0 {
		s.j.segMax = opts.segmentMax
	}
	s.j.noPrealloc = opts.noPrealloc
	if err := s.makeDirs(dir); err != nil {
		return nil, err
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return nil, err
	}
	s.lock = lock
	s.res.fs = &s.fs
	if err := s.res.open(filepath.Join(dir, reserveName)); err != nil {
		s.unlock()
		return nil, fmt.Errorf("spool: %w", err)
	}
	gen, err := s.replay()
	if err == nil {
		err = s.recover()
	}
	if err == nil {
		err = s.j.start(gen + 1)
	}
	if err != nil {
		s.res.close()
		s.unlock()
		return nil, err
	}
	s.startStateGC()
	return s, nil
}

// makeDirs creates the spool directories. New directory entries are made
// durable too: a queue directory that vanishes in a crash would take every
// message in it along.
func (s *Store) makeDirs(dir string) error {
	created := false
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := s.fs.syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	for _, sub := range []string{s.queueDir, s.tmpDir, s.corruptDir, filepath.Join(dir, journalSub)} {
		err := os.Mkdir(sub, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		created = true
	}
	if created {
		return s.fs.syncDir(dir)
	}
	return nil
}

// Close waits for writes in progress, then releases the directory. Calls
// after Close fail with ErrClosed; files returned by Body stay readable.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.ops.Wait()
	s.stopStateGC()
	err := s.j.close()
	s.res.close()
	if uerr := s.unlock(); err == nil {
		err = uerr
	}
	return err
}

func (s *Store) unlock() error {
	if s.lock == nil {
		return nil
	}
	return s.lock.Close() // closing the descriptor releases the flock
}

func (s *Store) bodyPath(id string) string  { return filepath.Join(s.queueDir, id+extBody) }
func (s *Store) statePath(id string) string { return filepath.Join(s.queueDir, id+extState) }

// beginLocked registers a call that touches files; it fails after Close.
// s.mu must be held. The caller must call s.ops.Done.
func (s *Store) beginLocked() error {
	if s.closed {
		return ErrClosed
	}
	s.ops.Add(1)
	return nil
}

// schedule puts a committed entry in the heap its lease state calls for.
func (s *Store) schedule(e *entry) {
	if e.leaseUntil.IsZero() {
		heap.Push(&s.due, e)
	} else {
		heap.Push(&s.leased, e)
	}
}

// unschedule takes e out of whichever heap holds it, so Lease cannot hand
// it out while its files are being changed.
func (s *Store) unschedule(e *entry) {
	if e.heap != nil {
		heap.Remove(e.heap, e.idx)
	}
}

// entryHeap orders entries by due time, or by end of lease; ties go by ID
// so the order is deterministic.
type entryHeap struct {
	items   []*entry
	byLease bool
}

func (h *entryHeap) key(e *entry) time.Time {
	if h.byLease {
		return e.leaseUntil
	}
	return e.due
}

func (h *entryHeap) Len() int { return len(h.items) }

func (h *entryHeap) Less(i, j int) bool {
	a, b := h.key(h.items[i]), h.key(h.items[j])
	if !a.Equal(b) {
		return a.Before(b)
	}
	return h.items[i].msg.ID < h.items[j].msg.ID
}

func (h *entryHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].idx = i
	h.items[j].idx = j
}

func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.heap, e.idx = h, len(h.items)
	h.items = append(h.items, e)
}

func (h *entryHeap) Pop() any {
	n := len(h.items) - 1
	e := h.items[n]
	h.items[n] = nil
	h.items = h.items[:n]
	e.heap, e.idx = nil, -1
	return e
}

// peek is the first entry, nil when empty.
func (h *entryHeap) peek() *entry {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}
