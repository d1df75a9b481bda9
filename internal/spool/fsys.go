package spool

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
)

// Op is one file-system step the store takes, as Options.Fault sees it.
type Op uint8

// The steps, in the order a write goes through them.
const (
	OpCreate     Op = iota + 1 // create (or truncate) a file in tmp/
	OpWrite                    // write to a file in tmp/; once per write call
	OpSync                     // fsync a file
	OpRename                   // rename a file into queue/ or corrupt/; the path is the new name
	OpRemove                   // remove a file
	OpSyncDir                  // fsync a directory
	OpAppend                   // write a round of records to the journal
	OpTruncate                 // cut a failed round off the journal
	OpRotate                   // create a journal generation; the path is its file
	OpCheckpoint               // make every file written so far durable (syncfs); the path is the spool directory
	OpReserve                  // reserve disk space for the state and body files a checkpoint will write; the path is the reserve file
)

var opNames = [...]string{OpCreate: "create", OpWrite: "write", OpSync: "sync", OpRename: "rename", OpRemove: "remove", OpSyncDir: "syncdir",
	OpAppend: "append", OpTruncate: "truncate", OpRotate: "rotate", OpCheckpoint: "checkpoint", OpReserve: "reserve"}

// String is the step's name, e.g. "rename".
func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", o)
}

// fsys performs the store's file-system steps, giving the fault hook a
// chance to fail each one first. Every step of a write goes through it, so
// the hook sees exactly the sequence a crash could interrupt.
type fsys struct {
	noSync bool
	fault  func(op Op, path string) error
	// syncs counts the fsync calls made, files and directories, for the
	// benchmarks.
	syncs atomic.Int64
}

// check runs the fault hook; its error is returned as an *os.PathError so
// that callers cannot tell an injected fault from a real one.
func (f *fsys) check(op Op, path string) error {
	if f.fault == nil {
		return nil
	}
	if err := f.fault(op, path); err != nil {
		return &os.PathError{Op: op.String(), Path: path, Err: err}
	}
	return nil
}

func (f *fsys) create(path string) (*os.File, error) {
	if err := f.check(OpCreate, path); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
}

func (f *fsys) sync(file *os.File) error { return f.syncWith(file, (*os.File).Sync) }

// datasync is sync for the journal: fdatasync where there is one, which
// skips the inode's timestamps. The path the hook sees is the file's.
func (f *fsys) datasync(file *os.File) error { return f.syncWith(file, fdatasync) }

// syncWith runs the hook for OpSync, then sync unless fsync is off.
func (f *fsys) syncWith(file *os.File, sync func(*os.File) error) error {
	if err := f.check(OpSync, file.Name()); err != nil {
		return err
	}
	if f.noSync {
		return nil
	}
	f.syncs.Add(1)
	return sync(file)
}

// writeFile creates path, writes data to it and closes it, without
// fsync: for files the journal makes durable.
func (f *fsys) writeFile(path string, data []byte) error {
	file, err := f.create(path)
	if err != nil {
		return err
	}
	_, err = faultWriter{f, file}.Write(data)
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	return err
}

func (f *fsys) rename(from, to string) error {
	if err := f.check(OpRename, to); err != nil {
		return err
	}
	return os.Rename(from, to)
}

func (f *fsys) remove(path string) error {
	if err := f.check(OpRemove, path); err != nil {
		return err
	}
	return os.Remove(path)
}

// syncDir makes the entries of dir (renames, creations, removals) durable.
// Windows cannot fsync a directory and journals NTFS metadata itself, so it
// is skipped there.
func (f *fsys) syncDir(dir string) error {
	if err := f.check(OpSyncDir, dir); err != nil {
		return err
	}
	if f.noSync || runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	f.syncs.Add(1)
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// faultWriter runs the hook before every write to a file in tmp/, so a test
// can fail a body write halfway through, the way a disk fills up.
type faultWriter struct {
	fs   *fsys
	file *os.File
}

func (w faultWriter) Write(p []byte) (int, error) {
	if err := w.fs.check(OpWrite, w.file.Name()); err != nil {
		return 0, err
	}
	return w.file.Write(p)
}
