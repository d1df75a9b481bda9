package mailroute_test

import (
	"testing"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/queuetest"
)

// The core tests' in-memory store against the queue contract, so that the
// queue tests it serves run on a store as strict as the real ones:
// mailroute/spool and mailroute/riverqueue run the same suite.
func TestMemoryQueueConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) mailroute.QueueStore { return &mailroute.MemoryQueue{} })
}
