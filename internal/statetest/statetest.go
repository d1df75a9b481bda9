// Package statetest checks that a store keeps the StateStore contract of
// package mailroute: values come back as stored, expire at their time,
// stay in their namespace, can be deleted and listed, and concurrent
// writers do not tear each other's entries. Every implementation runs the
// same checks (the in-memory store, spool.Store, the River store).
package statetest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Store is mailroute.StateStore's method set (this package cannot import
// mailroute: imports point one way).
type Store interface {
	GetState(ctx context.Context, namespace, key string, now time.Time) ([]byte, bool, error)
	PutState(ctx context.Context, namespace, key string, value []byte, expires time.Time) error
	DeleteState(ctx context.Context, namespace, key string) error
	ListState(ctx context.Context, namespace string, now time.Time) (map[string][]byte, error)
}

// Run checks s. reopen, when not nil, returns a new store on the same
// storage (a restart, or another instance); its entries must be the same.
func Run(t *testing.T, s Store, reopen func() Store) {
	ctx := context.Background()
	// The real time: the durable stores remove what has expired by their
	// own clock (see RunExpiry), so a date in the past would have them
	// sweep these entries at reopen.
	now := time.Now().UTC().Truncate(time.Second)
	mustPut := func(s Store, ns, key string, v []byte, exp time.Time) {
		t.Helper()
		if err := s.PutState(ctx, ns, key, v, exp); err != nil {
			t.Fatalf("PutState(%q, %q): %v", ns, key, err)
		}
	}
	get := func(s Store, ns, key string, at time.Time) ([]byte, bool) {
		t.Helper()
		v, ok, err := s.GetState(ctx, ns, key, at)
		if err != nil {
			t.Fatalf("GetState(%q, %q): %v", ns, key, err)
		}
		return v, ok
	}

	if _, ok := get(s, "route", "missing", now); ok {
		t.Fatal("a missing entry was found")
	}
	longKey := strings.Repeat("k", 255)
	binary := []byte{0, 1, 2, 0xff, '\n', '"'}
	mustPut(s, "route", "mx1.example,mx2.example", []byte(`{"a":1}`), now.Add(time.Hour))
	mustPut(s, "route", longKey, binary, now.Add(time.Hour))
	mustPut(s, "mta-sts", "mx1.example,mx2.example", []byte("other namespace"), now.Add(time.Hour))
	mustPut(s, "route", "expired", []byte("x"), now)

	if v, ok := get(s, "route", "mx1.example,mx2.example", now); !ok || string(v) != `{"a":1}` {
		t.Fatalf("got %q, %v", v, ok)
	}
	if v, ok := get(s, "route", longKey, now); !ok || !bytes.Equal(v, binary) {
		t.Fatalf("255-byte key, binary value: got %q, %v", v, ok)
	}
	if _, ok := get(s, "route", "expired", now); ok {
		t.Fatal("an entry is returned at its expiry time")
	}
	if _, ok := get(s, "route", "mx1.example,mx2.example", now.Add(time.Hour)); ok {
		t.Fatal("an entry is returned after it expired")
	}
	if v, ok := get(s, "mta-sts", "mx1.example,mx2.example", now); !ok || string(v) != "other namespace" {
		t.Fatalf("namespaces mixed: %q", v)
	}

	// Replace, list, delete.
	mustPut(s, "route", "mx1.example,mx2.example", []byte("v2"), now.Add(2*time.Hour))
	list, err := s.ListState(ctx, "route", now)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || string(list["mx1.example,mx2.example"]) != "v2" || !bytes.Equal(list[longKey], binary) {
		t.Fatalf("ListState = %q", list)
	}
	if err := s.DeleteState(ctx, "route", longKey); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteState(ctx, "route", "never there"); err != nil {
		t.Fatalf("deleting a missing entry: %v", err)
	}
	if _, ok := get(s, "route", longKey, now); ok {
		t.Fatal("a deleted entry was found")
	}

	// Concurrent writers: every entry ends whole, with one writer's value.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				v := []byte(fmt.Sprintf("writer %d value %d", w, i))
				if err := s.PutState(ctx, "race", fmt.Sprintf("k%d", i%2), v, now.Add(time.Hour)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, k := range []string{"k0", "k1"} {
		if v, ok := get(s, "race", k, now); !ok || !strings.HasPrefix(string(v), "writer ") {
			t.Errorf("after concurrent writes %s = %q, %v", k, v, ok)
		}
	}

	if reopen == nil {
		return
	}
	s2 := reopen()
	if v, ok := get(s2, "route", "mx1.example,mx2.example", now); !ok || string(v) != "v2" {
		t.Fatalf("after reopening: %q, %v", v, ok)
	}
	if _, ok := get(s2, "route", longKey, now); ok {
		t.Fatal("after reopening, a deleted entry is back")
	}
}
