package spool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// The state directory holds small named values with an expiry beside the
// queue — what a Mailer learns (routes learned from refusals, MTA-STS
// policies) — so that they survive a restart:
//
//	dir/state/<hash>.json   one entry: namespace, key, value, expiry
//
// The file name is a hash of namespace and key (keys may hold any byte and
// be longer than a file name may). Each entry is written like a queue state
// (temporary file, fsync, rename, directory fsync), so a crash leaves the
// old value or the new one, never a torn one; an unreadable entry is
// treated as missing and replaced by the next write. Expired entries are
// removed by a sweep (stategc.go).
const stateSub = "state"

// stateSeq numbers temporary state files.
var stateSeq atomic.Uint64

// stateEntry is one state file.
type stateEntry struct {
	Namespace string    `json:"ns"`
	Key       string    `json:"key"`
	Value     []byte    `json:"value"`
	Expires   time.Time `json:"expires"`
}

func (s *Store) stateDir() string { return filepath.Join(filepath.Dir(s.queueDir), stateSub) }

func (s *Store) statePathFor(namespace, key string) string {
	h := sha256.Sum256([]byte(namespace + "\x00" + key))
	return filepath.Join(s.stateDir(), hex.EncodeToString(h[:20])+extState)
}

// GetState returns the value stored under namespace and key, and whether
// there is one that has not expired at now.
func (s *Store) GetState(ctx context.Context, namespace, key string, now time.Time) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	e, err := readStateFile(s.statePathFor(namespace, key))
	if err != nil || e == nil || e.Namespace != namespace || e.Key != key || !now.Before(e.Expires) {
		return nil, false, err
	}
	return e.Value, true, nil
}

// readStateFile reads one entry; a missing or damaged file is no entry.
func readStateFile(path string) (*stateEntry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var e stateEntry
	if json.Unmarshal(data, &e) != nil {
		return nil, nil // torn by a crash before rename is impossible; damaged by anything else: forget it
	}
	return &e, nil
}

// PutState stores value under namespace and key until expires, durably.
func (s *Store) PutState(ctx context.Context, namespace, key string, value []byte, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.maybeSweepState()
	data, err := json.Marshal(stateEntry{Namespace: namespace, Key: key, Value: value, Expires: expires})
	if err != nil {
		return err
	}
	dir := s.stateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spool: state: %w", err)
	}
	final := s.statePathFor(namespace, key)
	// A name of its own per write: concurrent writers of one key must not
	// share a temporary file.
	tmp := filepath.Join(s.tmpDir, fmt.Sprintf("state-%d-%s.tmp", stateSeq.Add(1), filepath.Base(final)))
	f, err := s.fs.create(tmp)
	if err != nil {
		return fmt.Errorf("spool: state: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = s.fs.sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// Under the entry's lock, so that a sweep that read the expired
		// value this replaces cannot remove the new one.
		l := s.gc.lockFor(final)
		l.Lock()
		err = s.fs.rename(tmp, final)
		l.Unlock()
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: state: %w", err)
	}
	if err := s.fs.syncDir(dir); err != nil {
		return fmt.Errorf("spool: state: %w", err)
	}
	return nil
}

// DeleteState removes an entry; a missing one is not an error.
func (s *Store) DeleteState(ctx context.Context, namespace, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.fs.remove(s.statePathFor(namespace, key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool: state: %w", err)
	}
	return s.fs.syncDir(s.stateDir())
}

// ListState returns the entries of a namespace that have not expired at
// now, by key. Expired entries are skipped here and removed by the sweep
// (stategc.go).
func (s *Store) ListState(ctx context.Context, namespace string, now time.Time) (map[string][]byte, error) {
	s.maybeSweepState()
	ents, err := os.ReadDir(s.stateDir())
	if errors.Is(err, fs.ErrNotExist) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool: state: %w", err)
	}
	out := make(map[string][]byte)
	for _, de := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, err := readStateFile(filepath.Join(s.stateDir(), de.Name()))
		if err != nil {
			return nil, fmt.Errorf("spool: state: %w", err)
		}
		if e != nil && e.Namespace == namespace && now.Before(e.Expires) {
			out[e.Key] = e.Value
		}
	}
	return out, nil
}
