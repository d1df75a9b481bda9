//go:build !linux

package smtpclient

import "net"

// rawIO is Linux's (rawio_linux.go); elsewhere the net.Conn's own Read
// and Write are used.
type rawIO struct{ rc any }

func (c *Conn) initRawIO()                     {}
func (c *Conn) rawRead(p []byte) (int, error)  { return c.raw.Read(p) }
func (c *Conn) rawWrite(p []byte) (int, error) { return c.raw.Write(p) }
func (c *Conn) tlsTransport() net.Conn         { return c.raw }
