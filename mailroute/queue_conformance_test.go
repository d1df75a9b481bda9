package mailroute_test

import (
	"testing"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/queuetest"
)

// The embedded store against the queue contract; mailroute/riverqueue runs
// the same suite against PostgreSQL.
func TestSpoolConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) mailroute.QueueStore {
		s := &mailroute.Spool{Dir: t.TempDir(), NoSync: true}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
