package mailroute

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
)

// connectFailure names how a connection attempt failed before any SMTP
// reply — "timeout", "refused", "unreachable" — or returns "" when the
// failure was something else (a TLS failure, a reply).
func connectFailure(e *Error) string {
	if e == nil || e.Code != 0 {
		return ""
	}
	err := e.Err
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "unreachable"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return "dial failed"
	}
	return ""
}
