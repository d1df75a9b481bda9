//go:build unix

package smtpclient

import (
	"errors"
	"net"
	"syscall"
)

// peekSocket looks at nc's receive queue without blocking and without
// taking anything from it (recv with MSG_PEEK|MSG_DONTWAIT). A read with a
// deadline in the past cannot do this: Go's poller refuses it before any
// system call.
func peekSocket(nc net.Conn, buf []byte) sockState {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return sockUnknown
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return sockUnknown
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	switch {
	case err != nil:
		return sockClosed
	case n > 0:
		return sockData
	case rerr == nil:
		return sockClosed // an orderly shutdown: EOF
	case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EWOULDBLOCK), errors.Is(rerr, syscall.EINTR):
		return sockEmpty
	}
	return sockClosed
}
