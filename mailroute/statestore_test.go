package mailroute

import (
	"testing"

	"github.com/mailroute/go-mailroute/internal/statetest"
)

func TestMemoryStateContract(t *testing.T) {
	statetest.Run(t, &memoryState{}, nil)
}

// Spool's state survives a restart: a second Spool on the directory, after
// the first is closed, sees the same entries.
func TestSpoolStateContract(t *testing.T) {
	dir := t.TempDir()
	s := &Spool{Dir: dir}
	statetest.Run(t, s, func() statetest.Store {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2 := &Spool{Dir: dir}
		t.Cleanup(func() { s2.Close() })
		return s2
	})
}
