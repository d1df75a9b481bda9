//go:build unix && !linux

package smtpclient

import "syscall"

// recvPeek is recv(fd, b, MSG_PEEK|MSG_DONTWAIT).
func recvPeek(fd uintptr, b []byte) (int, error) {
	n, _, err := syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}

// shortReadDrains is true only where the kernel's TCP is known to empty
// its receive queue on a short read (peek_recv_linux.go).
const shortReadDrains = false
