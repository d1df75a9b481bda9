package spool

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The state directory would otherwise only grow: Get and List hide an
// expired entry, but its file stays. A sweep removes the files of expired
// entries: once in the background when the store opens, then again at
// most every stateSweepEvery, started by a PutState or ListState (never
// by GetState, which is on the send path) and never waited for by them.
//
// A removal is not fsynced: a crash may bring an expired entry back,
// which stays hidden and goes at the next sweep. A file the store did not
// write as it is — unreadable, or not under the name its namespace and
// key hash to — is left alone, as Get and Put leave it today.

// stateSweepEvery is how often expired state entries are swept: a sweep
// reads every state file, as ListState does.
const stateSweepEvery = time.Hour

// stateLocks is the number of locks that order a sweep's removal of an
// entry against a PutState of the same entry.
const stateLocks = 64

// stateGC is the sweeper of a Store's state directory.
type stateGC struct {
	// locks, by file name, are held by PutState across its rename and by
	// a sweep across its second read and its removal, so a sweep never
	// removes a value written after it read the expired one.
	locks [stateLocks]sync.Mutex

	mu      sync.Mutex
	ctx     context.Context // cancelled by Close; nil before Open
	cancel  context.CancelFunc
	last    time.Time // when the last sweep started
	running bool
	wg      sync.WaitGroup
}

func (g *stateGC) lockFor(path string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(filepath.Base(path)))
	return &g.locks[h.Sum32()%stateLocks]
}

// startStateGC begins the store's sweeping; Open calls it.
func (s *Store) startStateGC() {
	s.gc.mu.Lock()
	s.gc.ctx, s.gc.cancel = context.WithCancel(context.Background())
	s.gc.mu.Unlock()
	s.maybeSweepState()
}

// stopStateGC stops a sweep in progress and waits for it; Close calls it.
func (s *Store) stopStateGC() {
	s.gc.mu.Lock()
	if s.gc.cancel != nil {
		s.gc.cancel()
	}
	s.gc.mu.Unlock()
	s.gc.wg.Wait()
}

// maybeSweepState starts a sweep in the background unless one is running
// or the last started less than stateSweepEvery ago. It never waits for
// the disk.
func (s *Store) maybeSweepState() {
	g := &s.gc
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if g.ctx == nil || g.ctx.Err() != nil || g.running || (!g.last.IsZero() && now.Sub(g.last) < stateSweepEvery) {
		return
	}
	g.running, g.last = true, now
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		s.SweepState(g.ctx, time.Now()) // failures are logged by SweepState
		g.mu.Lock()
		g.running = false
		g.mu.Unlock()
	}()
}

// SweepState removes the files of the state entries expired at now and
// returns how many it removed. A file it cannot read or remove is logged
// and skipped (the entry stays hidden, and the next sweep tries again);
// the first such error is returned.
func (s *Store) SweepState(ctx context.Context, now time.Time) (int, error) {
	dir := s.stateDir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		err = fmt.Errorf("spool: state sweep: %w", err)
		s.log.Error("spool: expired state entries not removed", "err", err)
		return 0, err
	}
	removed := 0
	var first error
	fail := func(path string, err error) {
		err = fmt.Errorf("spool: state sweep: %w", err)
		s.log.Warn("spool: an expired state entry not removed; it stays hidden until the next sweep", "path", path, "err", err)
		if first == nil {
			first = err
		}
	}
	for _, de := range ents {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if !de.Type().IsRegular() || filepath.Ext(de.Name()) != extState {
			continue
		}
		path := filepath.Join(dir, de.Name())
		e, err := readStateFile(path)
		if err != nil {
			fail(path, err)
			continue
		}
		if !s.expiredStateFile(path, e, now) {
			continue
		}
		ok, err := s.removeExpiredState(path, now)
		if err != nil {
			fail(path, err)
			continue
		}
		if ok {
			removed++
		}
	}
	return removed, first
}

// expiredStateFile reports whether e, read from path, is an entry the
// store wrote there and expired at now.
func (s *Store) expiredStateFile(path string, e *stateEntry, now time.Time) bool {
	return e != nil && path == s.statePathFor(e.Namespace, e.Key) && !now.Before(e.Expires)
}

// removeExpiredState removes path if it still holds an expired entry: a
// PutState may have replaced it since the sweep read it, and its rename
// and this check-and-remove exclude each other.
func (s *Store) removeExpiredState(path string, now time.Time) (bool, error) {
	l := s.gc.lockFor(path)
	l.Lock()
	defer l.Unlock()
	e, err := readStateFile(path)
	if err != nil || !s.expiredStateFile(path, e, now) {
		return false, err
	}
	err = s.fs.remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // a DeleteState came first
	}
	return err == nil, err
}
