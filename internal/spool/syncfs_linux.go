package spool

import (
	"os"
	"syscall"
)

// fdatasync flushes a file's data and the metadata needed to read it back
// (its size), not its timestamps.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// syncDirTree makes every file written in the file system holding dir
// durable with one syncfs(2): one journal commit for all of them, instead
// of an fsync per file. Since Linux 5.8 it reports writeback errors.
func syncDirTree(dir string, _ []string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	rc, err := d.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if _, _, e := syscall.Syscall(sysSyncfs, fd, 0, 0); e != 0 {
			serr = e
		}
	})
	if err != nil {
		return err
	}
	return serr
}
