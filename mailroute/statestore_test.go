package mailroute

import (
	"testing"

	"github.com/mailroute/go-mailroute/internal/statetest"
)

func TestMemoryStateContract(t *testing.T) {
	statetest.Run(t, &memoryState{}, nil)
}
