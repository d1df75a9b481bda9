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
//
// A TLS session runs over the same calls: crypto/tls reads and writes its
// records through tcpTransport.
type rawIO struct {
	rc       syscall.RawConn
	rfn, wfn func(fd uintptr) bool
	r, w     rawCall // the current read's and write's
}

// rawCall is one read or write in progress.
type rawCall struct {
	p     []byte // what it reads into or writes from
	n     int
	errno syscall.Errno
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
	r := &c.rio.r
	*r = rawCall{p: p}
	err := c.rio.rc.Read(c.rio.rfn)
	n, errno := r.n, r.errno
	*r = rawCall{}
	switch {
	case err != nil:
		return 0, renameOp(err, "read") // a deadline, a closed connection: net's own error
	case errno != 0:
		return 0, c.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) rawReadFn(fd uintptr) bool {
	r := &c.rio.r
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
	w := &c.rio.w
	*w = rawCall{p: p}
	var err error
	if len(p) > 0 {
		err = c.rio.rc.Write(c.rio.wfn)
	}
	n, errno := w.n, w.errno
	*w = rawCall{}
	switch {
	case err != nil:
		return n, renameOp(err, "write")
	case errno != 0:
		return n, c.opError("write", errno)
	}
	return n, nil
}

func (c *Conn) rawWriteFn(fd uintptr) bool {
	w := &c.rio.w
	for w.n < len(w.p) {
		// send with MSG_NOSIGNAL, as write on a socket the peer reset
		// would raise SIGPIPE.
		rest := w.p[w.n:]
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)),
			syscall.MSG_NOSIGNAL, 0, 0)
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the socket buffer is full: wait in the poller
		case 0:
			w.n += int(n)
		default:
			w.errno = errno
			return true
		}
	}
	return true
}

// renameOp gives an error of RawConn.Read or Write ("raw-read",
// "raw-write") the operation net.Conn's Read or Write would have named,
// so that what a user reads does not depend on how the bytes were moved.
func renameOp(err error, op string) error {
	if oe, ok := err.(*net.OpError); ok {
		e := *oe
		e.Op = op
		return &e
	}
	return err
}

// opError is the error net.Conn would give for errno.
func (c *Conn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.raw.LocalAddr(), Addr: c.raw.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// tlsTransport is what a TLS session runs over: c.raw, read and written
// through rawIO when it can be.
func (c *Conn) tlsTransport() net.Conn {
	if c.rio.rc == nil {
		return c.raw
	}
	return tcpTransport{c.raw, c}
}

// tcpTransport is c.raw with Read and Write made by rawIO; deadlines,
// addresses and Close are c.raw's own.
type tcpTransport struct {
	net.Conn
	c *Conn
}

func (t tcpTransport) Read(p []byte) (int, error)  { return t.c.rawRead(p) }
func (t tcpTransport) Write(p []byte) (int, error) { return t.c.rawWrite(p) }
