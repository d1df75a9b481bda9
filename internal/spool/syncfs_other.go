//go:build !linux

package spool

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
)

func fdatasync(f *os.File) error { return f.Sync() }

// syncDirTree makes the given files durable, one fsync each, and then the
// directories holding them (no syncfs outside Linux). Missing files are
// skipped: they were removed, and the directory fsync covers that.
func syncDirTree(_ string, paths []string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if runtime.GOOS == "windows" {
			f.Close()
			f, err = os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
