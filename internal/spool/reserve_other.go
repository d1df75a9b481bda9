//go:build !linux

package spool

import "os"

// allocate cannot reserve space here without writing it: the store goes
// on without a reserve (a checkpoint on a full disk then keeps its
// journal until space is freed).
func allocate(*os.File, int64) error { return errNoAllocate }
