//go:build !unix

package smtpclient

import "net"

// peekSocket cannot look at the receive queue without blocking here; only
// what is already buffered is checked.
func peekSocket(nc net.Conn, buf []byte) sockState { return sockUnknown }
