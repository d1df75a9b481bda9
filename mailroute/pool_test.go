package mailroute

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
	"github.com/mailroute/go-mailroute/internal/smtptest"
)

func testPool(s *smtptest.Server, max int, now *time.Time) *pool {
	var mu sync.Mutex
	return &pool{
		max: max, maxIdle: max, idleTimeout: 5 * time.Second,
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return *now },
		dial: func(ctx context.Context) (*smtpclient.Conn, *Error) {
			c, err := smtpclient.Dial(ctx, s.Addr, "mx.test", &smtpclient.Config{TLS: smtpclient.TLSNone})
			if err != nil {
				return nil, fromClient(err, nil)
			}
			return c, nil
		},
	}
}

// Idle sessions end with QUIT once past the idle timeout, and the pool then
// reports itself unused (so directPools forgets it).
func TestPoolReap(t *testing.T) {
	s := smtptest.Start(t, smtptest.Options{})
	now := time.Unix(1000, 0)
	p := testPool(s, 2, &now)
	ctx := context.Background()
	c, pooled, err := p.get(ctx)
	if err != nil || pooled {
		t.Fatalf("get: %v pooled=%v", err, pooled)
	}
	p.put(c)
	if p.reap() {
		t.Fatal("a fresh idle session was reaped")
	}
	if c2, pooled, _ := p.get(ctx); !pooled || c2 != c {
		t.Fatal("the idle session was not reused")
	} else {
		p.put(c2)
	}
	now = now.Add(6 * time.Second)
	if !p.reap() {
		t.Fatal("pool still in use after its only session expired")
	}
	deadline := time.Now().Add(2 * time.Second)
	for !bytes.Contains(s.Transcript(), []byte("QUIT")) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !bytes.Contains(s.Transcript(), []byte("QUIT")) {
		t.Fatal("the expired session was not ended with QUIT")
	}
}

// When the cap is reached, a waiting caller gets the session the next
// transaction puts back: never more than max open.
func TestPoolCapHandsOver(t *testing.T) {
	s := smtptest.Start(t, smtptest.Options{})
	now := time.Now()
	p := testPool(s, 1, &now)
	ctx := context.Background()
	c, _, err := p.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Pointer[smtpclient.Conn]
	done := make(chan struct{})
	go func() {
		c2, pooled, err := p.get(ctx)
		if err == nil && pooled {
			got.Store(c2)
		}
		close(done)
	}()
	time.Sleep(50 * time.Millisecond) // the second caller is waiting
	p.put(c)
	<-done
	if got.Load() != c || s.Connections() != 1 {
		t.Fatalf("handed over %p (want %p), %d connections", got.Load(), c, s.Connections())
	}
	// A waiter whose context ends leaves no slot behind.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, _, err := p.get(short); err == nil {
		t.Fatal("got a second session past the cap")
	}
	p.put(c)
	if c3, pooled, err := p.get(ctx); err != nil || !pooled || c3 != c {
		t.Fatalf("after a cancelled waiter: %v pooled=%v", err, pooled)
	}
}
