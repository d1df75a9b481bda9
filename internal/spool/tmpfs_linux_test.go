//go:build linux

package spool

import (
	"os"
	"syscall"
	"testing"
)

// smallTmpfs mounts a 256 KiB tmpfs on a new temporary directory, for the
// tests that fill a real file system, and unmounts it when the test ends.
// It skips the test where mounting is not allowed (not root, or no
// permission in this container); why names what still covers the case.
func smallTmpfs(t *testing.T, why string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; " + why)
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillUp uses up every page left on the file system of dir with a file
// of its own (dir/filler), so that only what the spool frees is free.
func fillUp(t *testing.T, dir string) {
	t.Helper()
	filler, err := os.Create(dir + "/filler")
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	page := make([]byte, 4096)
	for {
		if _, err := filler.Write(page); err != nil {
			return
		}
	}
}
