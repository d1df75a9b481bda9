package mailroute

import (
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailroute/go-mailroute/internal/smtptest"
)

// A destination that pushes back (4.7.x) holds back the mail the next
// leases bring, not the messages leased in the same batch, which run beside
// the throttled attempt: what is due is decided for the whole batch before
// any attempt starts, so the outcome does not depend on which attempt the
// scheduler runs first. With Concurrency 2 and three messages due, exactly
// the first batch's two are tried and the third waits for the hold.
func TestQueueThrottleHoldsNextLeaseNotSiblings(t *testing.T) {
	w := newDirectWorld(t)
	var (
		mu       sync.Mutex
		tried    = map[string]int{}
		throttle bool
	)
	w.mx("mx.dest.test", "127.0.0.1", smtptest.Options{RcptPolicy: func(rcpt string) *smtp.SMTPError {
		mu.Lock()
		defer mu.Unlock()
		tried[rcpt]++
		if throttle {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "rate limit exceeded, slow down"}
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "local problem"}
	}})
	w.dns.MX("dest.test", "mx.dest.test")
	clock, events := newFakeClock(), &eventLog{}
	m := w.queued(Config{Concurrency: 2}, clock, events)
	rcpts := []string{"a@dest.test", "b@dest.test", "c@dest.test"}
	for _, r := range rcpts {
		send(t, m, "a@sender.test", []string{r}, testBody) // each due at +5m
	}
	mu.Lock()
	throttle = true
	clear(tried)
	mu.Unlock()
	clock.Advance(5 * time.Minute)
	m.runQueue(t)

	mu.Lock()
	defer mu.Unlock()
	attempted, total := 0, 0
	for _, r := range rcpts {
		total += tried[r]
		ev := events.last(r)
		switch tried[r] {
		case 1: // in the first batch: throttled, held with the destination
			attempted++
			if ev.Kind != EventDeferred || ev.NextAttempt != clock.Now().Add(10*time.Minute) {
				t.Errorf("%s, tried: %+v", r, ev)
			}
		case 0: // leased after the hold: left as it was
			if ev.Kind != EventQueued || ev.NextAttempt != clock.Now() {
				t.Errorf("%s, held: %+v", r, ev)
			}
		}
	}
	if attempted != 2 || total != 2 {
		events.mu.Lock()
		for _, e := range events.events {
			t.Logf("%s %s next %s: %v", e.Rcpt, e.Kind, e.NextAttempt, e.Err)
		}
		events.mu.Unlock()
		t.Fatalf("%d recipients tried (%v), want the 2 of the first batch, once each", attempted, tried)
	}
}
