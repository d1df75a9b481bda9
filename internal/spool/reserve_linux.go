package spool

import (
	"os"
	"syscall"
)

// allocate gives f at least size bytes of allocated blocks (fallocate(2),
// which extends the file).
func allocate(f *os.File, size int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var aerr error
	err = rc.Control(func(fd uintptr) {
		for {
			aerr = syscall.Fallocate(int(fd), 0, 0, size)
			if aerr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	if aerr != nil && noAllocate(aerr) {
		return errNoAllocate
	}
	if aerr != nil {
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: aerr}
	}
	return nil
}
