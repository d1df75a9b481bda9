//go:build linux

package smtpclient

import (
	"syscall"
	"unsafe"
)

// recvPeek is recv(fd, b, MSG_PEEK|MSG_DONTWAIT). It cannot block, so it
// is made as a raw system call: syscall.Recvfrom goes through the
// scheduler's entersyscall and exitsyscall (and may wake its monitor
// thread), which cost more than the call itself, twice per message.
func recvPeek(fd uintptr, b []byte) (int, error) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(n), nil
}

// shortReadDrains: on Linux a read of a TCP socket copies from its receive
// queue until the length asked for is reached or the queue (and the
// backlog of segments not yet queued) is empty, so a read that returns
// less than asked left nothing queued behind it (tcp_recvmsg). See
// quietAfterReply.
const shortReadDrains = true
