package spool_test

import (
	"testing"

	"github.com/mailroute/go-mailroute/internal/statetest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/queuetest"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// The directory store against the queue contract; mailroute/riverqueue
// runs the same suite against PostgreSQL.
func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) mailroute.QueueStore {
		s := &spool.Store{Dir: t.TempDir(), NoSync: true}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// What a restarted process finds: a second Store on the directory, after
// the first is closed.
func TestReopenConformance(t *testing.T) {
	dir := t.TempDir()
	s := &spool.Store{Dir: dir, NoSync: true}
	queuetest.RunReopen(t, s, func() mailroute.QueueStore {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2 := &spool.Store{Dir: dir, NoSync: true}
		t.Cleanup(func() { s2.Close() })
		return s2
	})
}

// The state survives a restart: a second Store on the directory, after
// the first is closed, sees the same entries.
func TestStateContract(t *testing.T) {
	dir := t.TempDir()
	s := &spool.Store{Dir: dir}
	statetest.Run(t, s, func() statetest.Store {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2 := &spool.Store{Dir: dir}
		t.Cleanup(func() { s2.Close() })
		return s2
	})
}
