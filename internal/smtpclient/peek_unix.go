//go:build unix

package smtpclient

import (
	"errors"
	"os"
	"syscall"
)

// peekSocket looks at the connection's receive queue without blocking and
// without taking anything from it (recv with MSG_PEEK|MSG_DONTWAIT). A
// read with a deadline in the past cannot do this: Go's poller refuses it
// before any system call. The raw connection and the callback are kept in
// the Conn, so a look costs a system call and no allocation.
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
	err := c.peek.rc.Read(c.peek.fn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The read deadline the last operation left (its context's,
		// say) has passed while the session sat idle; the poller then
		// refuses before any system call. That says nothing about the
		// session: look again under a deadline of now.
		c.setReadDeadline(c.to.Command)
		err = c.peek.rc.Read(c.peek.fn)
	}
	if err != nil {
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

func (c *Conn) peekRecv(fd uintptr) bool {
	c.peek.n, c.peek.err = recvPeek(fd, c.probe[:])
	return true
}
