package smtptest

import (
	"testing"
	"time"
)

// TimeOutSessions ends every open session the way an idle timeout does:
// the read the server is blocked in, or its next one, times out, so
// go-smtp answers "421 4.4.2 Idle timeout, bye bye" and closes the
// connection. A session in the middle of something (a STARTTLS handshake:
// a TLS 1.3 client finishes its side before the server does) is cut off
// there, as by a real timeout; wait for a reply that shows it idle first.
// It returns once all those connections are closed, and fails t if one is
// still open after 10 seconds.
//
// A test of a client that finds its pooled session closed by the server
// uses this rather than a short ReadTimeout and a sleep: ReadTimeout bounds
// every read, the TLS handshake included, so on a loaded machine it also
// cuts off the sessions the test needs to succeed, and the sleep only
// hopes the timeout has fired.
func (s *Server) TimeOutSessions(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	var open []*conn
	for _, c := range s.conns {
		select {
		case <-c.done:
			continue
		default:
		}
		c.expired = true
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		// Unblocks a read in progress; conn.Read refuses the later ones.
		c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
	deadline := time.NewTimer(closeTimeout)
	defer deadline.Stop()
	for _, c := range open {
		select {
		case <-c.done:
		case <-deadline.C:
			t.Fatalf("smtptest: TimeOutSessions: connection %d still open after %v", c.index, closeTimeout)
		}
	}
}
