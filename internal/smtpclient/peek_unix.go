//go:build unix

package smtpclient

import (
	"errors"
	"syscall"
)

// peekSocket looks at the connection's receive queue without blocking and
// without taking anything from it (recv with MSG_PEEK|MSG_DONTWAIT). A
// read with a deadline in the past cannot do this: Go's poller refuses it
// before any system call. The call is made under RawConn.Control, which
// only holds the descriptor open, rather than RawConn.Read, which also
// takes the read lock and arms the poller for a wait that MSG_DONTWAIT
// never needs (and refuses when the deadline the last operation left has
// passed). The raw connection and the callback are kept in the Conn, so a
// look costs a system call and no allocation.
func (c *Conn) peekSocket() sockState {
	if c.peek.rc == nil {
		sc, ok := c.raw.(syscall.Conn)
		if !ok {
			return sockUnknown
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return sockUnknown
		}
		c.peek.rc = rc
		c.peek.fn = c.peekRecv
	}
	c.peek.looks++
	if err := c.peek.rc.Control(c.peek.fn); err != nil {
		return sockClosed
	}
	switch n, err := c.peek.n, c.peek.err; {
	case n > 0:
		return sockData
	case err == nil:
		return sockClosed // an orderly shutdown: EOF
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.EINTR):
		return sockEmpty
	}
	return sockClosed
}

func (c *Conn) peekRecv(fd uintptr) {
	c.peek.n, c.peek.err = recvPeek(fd, c.probe[:])
}
