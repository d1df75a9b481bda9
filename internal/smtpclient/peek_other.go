//go:build !unix

package smtpclient

// peekSocket cannot look at the receive queue without blocking here; only
// what is already buffered is checked.
func (c *Conn) peekSocket() sockState { return sockUnknown }

// shortReadDrains: see peek_recv_linux.go.
const shortReadDrains = false
