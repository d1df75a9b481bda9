package riverqueue_test

import (
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/statetest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// Two Stores on one database — two instances — share what they learn.
func TestStateContract(t *testing.T) {
	s, pool := newStore(t)
	statetest.Run(t, s, func() statetest.Store { return &riverqueue.Store{Pool: pool} })
}

// Stores on different queues keep their knowledge apart, like their mail.
func TestStateSeparateQueues(t *testing.T) {
	s, pool := newStore(t)
	other := &riverqueue.Store{Pool: pool, Queue: "other"}
	ctx := t.Context()
	now := time.Now()
	if err := s.PutState(ctx, "route", "k", []byte("v"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := other.GetState(ctx, "route", "k", now); err != nil || ok {
		t.Fatalf("another queue's store sees the entry: %v, %v", ok, err)
	}
}
