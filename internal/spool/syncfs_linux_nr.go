//go:build linux && !amd64 && !386

package spool

import "syscall"

const sysSyncfs = syscall.SYS_SYNCFS
