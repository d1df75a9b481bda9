package spool

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// openSyncFS opens dir for syncfs(2) when the kernel reports write-back
// errors through it, and returns nil otherwise (the store then fsyncs file
// by file). Linux 5.8 made syncfs return an error when write-back of any
// file of the file system failed since the descriptor was opened; before
// that it returned 0 even then, and a lost body would go unnoticed. The
// descriptor must stay open for the store's life: opening a new one per
// call would miss errors that happened before the open.
func openSyncFS(dir string) *os.File {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil || !kernelAtLeast(utsString(u.Release[:]), 5, 8) {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	return f
}

// syncFS writes back every dirty page and the journal of the file system
// holding f, and waits for the disk to have them.
func syncFS(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	err = rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(sysSyncfs, fd, 0, 0)
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return &os.PathError{Op: "syncfs", Path: f.Name(), Err: errno}
	}
	return nil
}

// utsString reads a NUL-terminated Utsname field, whose element type
// differs between architectures.
func utsString[T int8 | uint8](b []T) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// kernelAtLeast reports whether a release string such as "6.1.0-18-amd64"
// is major.minor or later; an unparsable one is not.
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	end := strings.IndexFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(parts[1])
	}
	min, err2 := strconv.Atoi(parts[1][:end])
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > major || maj == major && min >= minor
}
