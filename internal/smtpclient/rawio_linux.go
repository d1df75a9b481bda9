//go:build linux

package smtpclient

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a plaintext TCP session with system calls made
// under RawConn.Read and RawConn.Write, as raw system calls. The socket is
// non-blocking (Go's poller owns it), so neither call can block: when it
// would, it returns EAGAIN and RawConn waits in the poller, with the
// deadlines and the abort of SetDeadline honoured exactly as by
// net.Conn's Read and Write. What this saves is the scheduler's
// entersyscall and exitsyscall around each call, which also wake the
// runtime's monitor thread (a futex) whenever the process had gone idle —
// as it has every time it waited for a reply: about a quarter of the
// sender's CPU time per message on loopback.
type rawIO struct {
	rc       syscall.RawConn
	rfn, wfn func(fd uintptr) bool
	p        []byte // what the current call reads into or writes from
	n        int
	errno    syscall.Errno
}

// initRawIO sets up c.rio for a *net.TCPConn; c.rio.rc stays nil when it
// cannot be, and the net.Conn's own Read and Write are used.
func (c *Conn) initRawIO() {
	tc, ok := c.raw.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	c.rio.rc = rc
	c.rio.rfn = c.rawReadFn
	c.rio.wfn = c.rawWriteFn
}

// rawRead is net.Conn.Read on c.raw (see rawIO).
func (c *Conn) rawRead(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r := &c.rio
	r.p, r.n, r.errno = p, 0, 0
	err := r.rc.Read(r.rfn)
	r.p = nil
	switch {
	case err != nil:
		return 0, err // a deadline, a closed connection: net's own error
	case r.errno != 0:
		return 0, c.opError("read", r.errno)
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

func (c *Conn) rawReadFn(fd uintptr) bool {
	r := &c.rio
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait in the poller
		case 0:
			r.n = int(n)
		default:
			r.errno = errno
		}
		return true
	}
}

// rawWrite is net.Conn.Write on c.raw (see rawIO): all of p, or an error.
func (c *Conn) rawWrite(p []byte) (int, error) {
	r := &c.rio
	r.p, r.n, r.errno = p, 0, 0
	var err error
	if len(p) > 0 {
		err = r.rc.Write(r.wfn)
	}
	n := r.n
	r.p = nil
	switch {
	case err != nil:
		return n, err
	case r.errno != 0:
		return n, c.opError("write", r.errno)
	}
	return n, nil
}

func (c *Conn) rawWriteFn(fd uintptr) bool {
	r := &c.rio
	for r.n < len(r.p) {
		// send with MSG_NOSIGNAL, as write on a socket the peer reset
		// would raise SIGPIPE.
		rest := r.p[r.n:]
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)),
			syscall.MSG_NOSIGNAL, 0, 0)
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the socket buffer is full: wait in the poller
		case 0:
			r.n += int(n)
		default:
			r.errno = errno
			return true
		}
	}
	return true
}

// opError is the error net.Conn would give for errno.
func (c *Conn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.raw.LocalAddr(), Addr: c.raw.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
