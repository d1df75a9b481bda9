//go:build !unix

package spool_test

import "time"

// benchCPU is 0 where getrusage(2) is missing: the CPU figures then read 0.
func benchCPU() time.Duration { return 0 }
